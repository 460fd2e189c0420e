"""promptiqa adapt (issue 33, items 2 and 4): the k-shot draws, the bootstrap CIs, relabel consistency, the
requirement matrix, resuming, and the command end to end on csv fixtures sharing images (micro models, CPU)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from promptiqa.cli import main as cli_main
from promptiqa.data import load_dataset, make_split, normalise_labels, official_train_order, sample_isps
from promptiqa.distributed import DistEnv
from promptiqa.evaluation.features import FeatureBank
from promptiqa.experiments import adapt as adapt_module
from promptiqa.experiments import adapt_measures as measures
from promptiqa.models import build_model, checkpoint_config, load_model, save_checkpoint
from tests.fixtures.datasets import write_csv, write_image

N_REFS, PER_REF = 10, 4   # 40 images by reference: 8 references (32 images) train, 2 (8 images) test


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the micro model's small kernels only wait for each other on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Two csv datasets over the same 40 images: 'bright' scores each image's mean brightness, 'tag' a number
    unrelated to it (two orthogonal requirements); and micro checkpoints, PromptIQA trained on neither."""
    root = tmp_path_factory.mktemp("adapt")
    rng = np.random.default_rng(0)
    bright, tag = [], []
    for r in range(N_REFS):
        for j in range(PER_REF):
            name = f"images/s{r}_{j}.png"
            write_image(root / name, seed=10 * r + j)
            pixels = __import__("cv2").imread(str(root / name))
            bright.append([name, round(float(pixels.mean()), 3), f"s{r}"])
            tag.append([name, round(float(rng.uniform(1, 5)), 3), f"s{r}"])
    write_csv(root / "bright.csv", ["image", "score", "reference"], bright)
    write_csv(root / "tag.csv", ["image", "score", "reference"], tag)
    torch.manual_seed(0)
    model = build_model("promptiqa", preset="micro")
    ours = save_checkpoint(root / "ours.pth.tar", model, config=checkpoint_config(
        model, prompt_num=5, label_norm="official", splits={}, datasets=["koniq10k"]))
    torch.manual_seed(1)
    wo = build_model("promptiqa_wo_prompt", preset="micro")
    wo_path = save_checkpoint(root / "wo.pth.tar", wo, config=checkpoint_config(
        wo, prompt_num=5, label_norm="official", splits={}, datasets=["koniq10k"]))
    return {"root": root, "bright": root / "bright.csv", "tag": root / "tag.csv", "ours": str(ours),
            "wo": str(wo_path)}


def _adapt(shared, out, *extra):
    return cli_main(["adapt", "--checkpoint", shared["ours"], "--dataset", "bright", "tag",
                     "--data_root", f"bright={shared['bright']}", "--data_root", f"tag={shared['tag']}",
                     "--k", "2", "3", "--isp_num", "5", "-j", "0", "--progress", "false", "--bootstrap", "200",
                     "--save_path", str(out), *map(str, extra)])


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_adapt_end_to_end_and_a_rerun_computes_nothing_new(shared, tmp_path, monkeypatch, capsys):
    out = tmp_path / "adapt"
    assert _adapt(shared, out, "--isp_strategy", "random", "--draws", "2", "--baseline", shared["wo"],
                  "--finetune_steps", "1") == 0
    first = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"units", "report.md", "results.csv", "results.json", "adapt.png"}
    results = json.loads((out / "results.json").read_text())
    for key in ("bright", "tag"):
        curve = results["curves"][key]
        assert [p["k"] for p in curve["promptiqa"]] == [2, 3] and [p["draws"] for p in curve["promptiqa"]] == [2, 2]
        assert [p["k"] for p in curve["fine_tuned"]] == [2, 3] and curve["zero_shot"][0]["draws"] == 1
        assert results["leakage"][key]["checkpoint"]["status"] == "not_trained"
        assert set(results["relabel"][key]) == set(measures.TRANSFORMS)
    matrix = results["matrices"][0]
    assert matrix["keys"] == ["bright", "tag"] and matrix["n"] == 8 and matrix["rows"] == ["bright", "tag"]
    assert "## Requirement matrix: bright, tag" in first and "| bright | 8 | 32 |" not in first
    rows = _rows(out / "results.csv")
    assert {r["measure"] for r in rows} == {"kshot", "matrix", "margin", "relabel"}
    cost = results["cost"]
    # 2 datasets x (2 k x 2 draws + zero-shot + relabel + matrix row) = 14 units; 8 test images each, encoded once
    # per model: the checkpoint's bank, the zero-shot pass and one pass per fine-tuned draw
    assert cost["units"] == cost["computed"] == 14 and cost["reused"] == 0
    assert cost["all_units"]["images_encoded"] == 2 * 8 * (1 + 1 + 4)
    assert cost["all_units"]["finetune_steps"] == 2 * 4 * 1
    stamps = {p: p.stat().st_mtime_ns for p in (out / "units").rglob("*.json")}

    built = []
    monkeypatch.setattr(adapt_module, "FeatureBank", lambda *a, **k: built.append(a))
    assert _adapt(shared, out, "--isp_strategy", "random", "--draws", "2", "--baseline", shared["wo"],
                  "--finetune_steps", "1") == 0
    again = json.loads((out / "results.json").read_text())
    assert built == [] and again["cost"]["computed"] == 0 and again["cost"]["reused"] == 14
    assert {p: p.stat().st_mtime_ns for p in (out / "units").rglob("*.json")} == stamps
    assert again["curves"] == results["curves"] and again["matrices"] == results["matrices"]
    assert "14 units: 0 computed by this run, 14 reused" in capsys.readouterr().out
    # an interrupted run (a unit missing) computes that unit alone, to the same figures
    monkeypatch.undo()
    (out / "units" / "kshot" / "tag" / "k3_d1.json").unlink()
    assert _adapt(shared, out, "--isp_strategy", "random", "--draws", "2", "--baseline", shared["wo"],
                  "--finetune_steps", "1") == 0
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["cost"]["computed"] == 1 and resumed["cost"]["reused"] == 13
    assert resumed["curves"] == results["curves"]
    capsys.readouterr()
    # units of other settings are never mixed in: a rerun with another sampling seed into the folder is refused
    assert _adapt(shared, out, "--isp_strategy", "random", "--isp_seed", "5") == 1
    assert "holds units computed with other settings (baseline, finetune_steps, isp_seed differ)" in \
        capsys.readouterr().err
    # the k-shot loop drew the stated ISPPs: draw d of size k is random sampling with seed isp_seed + d (0 + d)
    ds = load_dataset("bright", shared["bright"])
    split = make_split(ds, 2024)
    labels, names = normalise_labels(ds, split.train_indices), [ds.records[i].name for i in split.train_indices]
    order = official_train_order(ds, split)
    drawn = {}
    for k in (2, 3):
        for d in (0, 1):
            unit = json.loads((out / "units" / "kshot" / "bright" / f"k{k}_d{d}.json").read_text())
            picks = sample_isps(labels, k, "random", seed=d, order=order)
            assert [p["image"] for p in unit["prompt"]] == [names[p] for p in picks] and unit["seed"] == d
            drawn[k, d] = [p["image"] for p in unit["prompt"]]
    assert drawn[3, 0] != drawn[3, 1]
    # the relabel check and the matrix use test.py's ISPP: --isp_num 5, --isp_strategy random, --isp_seed 0
    unit = json.loads((out / "units" / "relabel" / "bright.json").read_text())
    assert [p["image"] for p in unit["prompt"]] == [names[p] for p in sample_isps(labels, 5, "random", 0, order)]


def test_interval_sampling_draws_one_ispp_per_k_capped_by_the_train_split():
    assert measures.draw_plan([2, 5, 50, 80], 40, "interval", 10, 7) == [
        measures.Draw(2, 0, 7), measures.Draw(5, 0, 7), measures.Draw(40, 0, 7)]
    assert measures.draw_plan([5], 40, "random", 3, 7) == [measures.Draw(5, d, 7 + d) for d in range(3)]


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_draws():
    rng = np.random.default_rng(0)
    gt = rng.uniform(size=60)
    widths = []
    for draws in (4, 64):
        pred = gt[None] + rng.normal(0, rng.uniform(0.2, 1.0, (draws, 1)), (draws, 60))
        summary = measures.summarise_curve(pred, gt, 500, [0])
        for metric in ("srocc", "plcc"):
            for side in ("draws", "images"):
                assert summary[f"{metric}_{side}_low"] <= summary[metric] <= summary[f"{metric}_{side}_high"]
        widths.append(summary["srocc_draws_high"] - summary["srocc_draws_low"])
    assert widths[1] < widths[0] / 2
    one = measures.summarise_curve(gt[None] + 0.1, gt, 100, [0])   # one draw: no spread over draws
    assert one["srocc_draws_low"] == one["srocc_draws_high"] == one["srocc"] == 1.0


class PolarityModel(torch.nn.Module):
    """A test model that reads only the prompt's polarity: its prediction is the image's brightness, negated when
    the prompt's scores fall as its images' brightness rises."""

    image_size = 64

    def image_features(self, images):
        return images.mean(dim=(1, 2, 3))[:, None]

    def encode_prompt(self, images, scores):
        brightness = images.mean(dim=(1, 2, 3))
        return torch.sign(((brightness - brightness.mean()) * (scores - scores.mean())).sum())

    def score_features(self, features, prompt=None):
        return features[:, 0] * prompt


def test_relabel_consistency_of_a_model_ignoring_the_prompt_and_of_one_reading_its_polarity(shared):
    from promptiqa.data import IQAImages
    from promptiqa.engine.inference import stack_items

    ds = load_dataset("bright", shared["bright"])
    split = make_split(ds, 2024)
    paths = [r.path for r in ds.records]
    train = IQAImages(paths, normalise_labels(ds, split.train_indices), 64, indices=split.train_indices)
    test = IQAImages(paths, normalise_labels(ds, split.test_indices), 64, indices=split.test_indices)
    images, scores = stack_items(train, [0, 5, 10, 15, 20])
    ignoring = FeatureBank(load_model(shared["wo"], device="cpu"), test, DistEnv())
    reading = FeatureBank(PolarityModel(), test, DistEnv())
    for bank, reversal in ((ignoring, 1.0), (reading, -1.0)):
        found = measures.relabel_consistency(lambda i, s: bank.score(i, torch.as_tensor(s, dtype=torch.float32)),
                                             images, scores.numpy())
        assert {t: v["spearman"] for t, v in found.items()} == pytest.approx(
            {"affine": 1.0, "power": 1.0, "log": 1.0, "reversal": reversal})
        assert found["reversal"]["expected"] == -1


def test_the_requirement_matrix_reads_prompts_as_rows_and_labels_as_columns():
    """Two orthogonal requirements; the model follows A's prompt, and under B's prompt still predicts A."""
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=50), rng.uniform(size=50)
    found = measures.requirement_matrix({"A": a + 0.01 * rng.normal(size=50), "B": a}, {"A": a, "B": b})
    assert found["rows"] == found["columns"] == ["A", "B"]
    assert found["srocc"]["A"]["A"] == pytest.approx(1.0, abs=0.01) and abs(found["srocc"]["A"]["B"]) < 0.3
    assert found["srocc"]["B"]["A"] == pytest.approx(1.0) and found["margin"]["A"] > 0.7 and found["margin"]["B"] < -0.7
    # images are matched by path: shared test images, less any key's training image; a dataset sharing none is alone
    groups = measures.requirement_groups({"A": ["x", "y", "z", "w"], "B": ["z", "y", "x"], "C": ["q"]},
                                         {"A": ["v"], "B": ["w"], "C": []})
    assert groups == [(["A", "B"], ["x", "y", "z"])]


def test_two_processes_measure_what_one_does(shared, tmp_path):
    """Sharded like test.py: under torchrun each rank encodes its share of the test images, the main rank writes."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    common = ["--checkpoint", shared["ours"], "--dataset", "bright", "tag", "--data_root", f"bright={shared['bright']}",
              "--data_root", f"tag={shared['tag']}", "--k", "2", "3", "--isp_num", "5", "-j", "0", "--batch_size", "3",
              "--bootstrap", "50", "--baseline", shared["wo"], "--finetune_steps", "1", "--progress", "false",
              "--plot", "false"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                           "promptiqa", "adapt", *common, "--save_path", str(tmp_path / "two")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in proc.stdout and proc.stdout.count("## Relabel consistency") == 1   # one rank writes
    assert cli_main(["adapt", *common, "--save_path", str(tmp_path / "one")]) == 0
    names = sorted(str(p.relative_to(tmp_path / "one")) for p in (tmp_path / "one" / "units").rglob("*.json"))
    assert names == sorted(str(p.relative_to(tmp_path / "two")) for p in (tmp_path / "two" / "units").rglob("*.json"))
    for name in names:
        if name.endswith("settings.json"):
            continue
        one, two = (json.loads((tmp_path / side / name).read_text()) for side in ("one", "two"))
        for field in ("pred", "fine_tuned"):
            if field in one:
                np.testing.assert_allclose(two[field], one[field], atol=1e-5)


N_GENERATED = 40   # rows of each real label file kept (the model scores every test image: the whole file is slow)


@pytest.fixture(scope="module")
def generated_roots(labels_dir, tmp_path_factory):
    """Roots of AGIQA-3K and AIGCIQA2023 in their releases' layouts holding the first rows of the real label files
    (every requirement's column) and a synthetic image for each row."""
    import cv2
    import scipy.io

    root = tmp_path_factory.mktemp("generated")
    rng = np.random.default_rng(0)

    def image(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))

    with open(labels_dir / "agiqa_3k" / "data.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[:N_GENERATED + 1]
    (root / "agiqa_3k").mkdir()
    with open(root / "agiqa_3k" / "data.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    for row in rows[1:]:
        image(root / "agiqa_3k" / "img" / row[0])
    with open(labels_dir / "aigciqa2023" / "AIGCIQA2023.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:N_GENERATED]
    mos = root / "aigciqa2023" / "DATA" / "MOS"
    mos.mkdir(parents=True)
    for number, column in enumerate(("quality_mos", "authenticity_mos", "correspondence_mos"), 1):
        scipy.io.savemat(str(mos / f"mosz{number}.mat"), {"MOSz": np.asarray([float(r[column]) for r in rows])[:, None]})
    for i in range(N_GENERATED):
        image(root / "aigciqa2023" / "Image" / "allimg" / f"{i}.png")
    return root


def test_adapt_measures_the_requirements_of_the_ai_generated_datasets(shared, generated_roots, tmp_path, capsys):
    """`promptiqa adapt` on AGIQA-3K and AIGCIQA2023 laid out as released (the real labels' first rows, synthetic
    images): each requirement is a dataset of its own, and those of one dataset form one requirement matrix."""
    keys = ["agiqa_3k", "agiqa_3k:align", "aigciqa2023", "aigciqa2023:authenticity", "aigciqa2023:correspondence"]
    out = tmp_path / "generated"
    assert cli_main(["adapt", "--checkpoint", shared["ours"], "--dataset", *keys,
                     "--data_root", f"agiqa_3k={generated_roots / 'agiqa_3k'}",
                     "--data_root", f"aigciqa2023={generated_roots / 'aigciqa2023'}", "--k", "2", "5",
                     "--isp_num", "5", "-j", "0", "--progress", "false", "--bootstrap", "50",
                     "--save_path", str(out)]) == 0
    assert {"report.md", "results.csv", "results.json", "adapt.png"} <= {p.name for p in out.iterdir()}
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["curves"]) == sorted(keys)
    for key in keys:
        assert [p["k"] for p in results["curves"][key]["promptiqa"]] == [2, 5]
        assert results["leakage"][key]["checkpoint"]["status"] == "not_trained"   # trained on koniq10k only
    matrices = {tuple(m["keys"]): m for m in results["matrices"]}
    assert set(matrices) == {tuple(keys[:2]), tuple(keys[2:])}
    for group, matrix in matrices.items():
        assert matrix["rows"] == list(group) and matrix["n"] == N_GENERATED // 5   # the 20% test split
    report = (out / "report.md").read_text()
    assert "## Requirement matrix: agiqa_3k, agiqa_3k:align" in report
    assert "## Requirement matrix: aigciqa2023, aigciqa2023:authenticity, aigciqa2023:correspondence" in report
