"""test.py, the leakage guard, the 10-split protocol and its summary, ablations, ISP experiments and Table 3, end to
end on fixture datasets with the micro model (CPU, seconds each)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from promptiqa.cli import main as cli_main
from promptiqa.data import IQAImages, SPLIT_SEEDS, load_dataset, make_split, normalise, normalise_labels
from promptiqa.distributed import DistEnv
from promptiqa.engine.inference import predict_split, stack_items
from promptiqa.evaluation.features import FeatureBank
from promptiqa.evaluation.isp import isp_main
from promptiqa.evaluation.leakage import check_leakage
from promptiqa.experiments.protocol import ablation_main, pick_seeds, ten_splits_main
from promptiqa.evaluation.prompts import build_prompt
from promptiqa.evaluation.report import PREDICTIONS_COLUMNS, RESULTS_COLUMNS
from promptiqa.evaluation.runner import main as evaluate_cli
from promptiqa.experiments.summary import SELECTIONS, read_seed_run, summarise_roots
from promptiqa.models import build_model, checkpoint_config, load_model, save_checkpoint
from tests.fixtures.datasets import build_fixture, write_csv

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """This module's datasets (in place of conftest's two): koniq10k, and tid2013 and kadid split by reference."""
    base = tmp_path_factory.mktemp("datasets")
    return {"koniq10k": str(build_fixture("koniq10k", base / "koniq", n_refs=6, per_ref=4, seed=1)),
            "tid2013": str(build_fixture("tid2013", base / "tid", n_refs=5, per_ref=4, seed=2)),
            "kadid": str(build_fixture("kadid", base / "kadid", n_refs=5, per_ref=4, seed=3))}


def _recorded_splits(data, keys, seed):
    out = {}
    for key in keys:
        split = make_split(load_dataset(key, data[key]), seed)
        out[key] = {"seed": seed, "split_by": split.split_by, "train": split.train_units, "test": split.test_units}
    return out


@pytest.fixture(scope="module")
def checkpoints(data, tmp_path_factory):
    """Untrained micro models saved as training saves them: PromptIQA recording seed-2024 splits, and w/o prompt."""
    base = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    model = build_model("promptiqa", preset="micro")
    splits = _recorded_splits(data, ("koniq10k", "tid2013"), 2024)
    ours = save_checkpoint(base / "ours.pth.tar", model, config=checkpoint_config(
        model, prompt_num=5, label_norm="official", splits=splits, datasets=list(splits)))
    torch.manual_seed(1)
    wo = build_model("promptiqa_wo_prompt", preset="micro")
    wo_path = save_checkpoint(base / "wo.pth.tar", wo, config=checkpoint_config(
        wo, prompt_num=5, label_norm="official", splits=splits, datasets=list(splits)))
    return {"ours": str(ours), "wo": str(wo_path)}


def _roots(data, keys):
    return [arg for key in keys for arg in ("--data_root", f"{key}={data[key]}")]


def _rows(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


# What the protocol tests train: two of the three datasets, one epoch (conftest's micro_train_argv otherwise).
TRAIN = dict(keys=("koniq10k", "tid2013"), epochs=1, log_every=4)


# ---------------------------------------------------------------- test.py


def test_test_py_writes_the_documented_files(data, checkpoints, tmp_path):
    out = tmp_path / "test"
    cmd = [sys.executable, str(ROOT / "test.py"), "--checkpoint", checkpoints["ours"], "--dataset", "koniq10k",
           "tid2013", *_roots(data, ("koniq10k", "tid2013")), "--split_file", "checkpoint", "-j", "0",
           "--device", "cpu", "--save_path", str(out), "--plcc_logistic"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SROCC" in proc.stdout and "WARNING" not in proc.stderr
    columns, rows = _rows(out / "results.csv")
    assert tuple(columns[:6]) == RESULTS_COLUMNS and "plcc_logistic" in columns and "leaked" in columns
    assert [r["dataset"] for r in rows] == ["koniq10k", "tid2013"]
    assert [r["n"] for r in rows] == ["5", "4"] and {r["leakage"] for r in rows} == {"none"}
    columns, preds = _rows(out / "predictions.csv")
    assert tuple(columns) == PREDICTIONS_COLUMNS and len(preds) == 9
    details = json.loads((out / "results.json").read_text())
    # full precision: the CSV's values are the exact floats, and they are the metrics of predictions.csv
    for r in rows:
        assert float(r["srocc"]) == details["datasets"][r["dataset"]]["metrics"]["srocc"]
        p = [x for x in preds if x["dataset"] == r["dataset"]]
        from promptiqa.metrics import plcc

        assert plcc([float(x["pred"]) for x in p], [float(x["gt"]) for x in p]) == float(r["plcc"])
    assert len(details["datasets"]["koniq10k"]["prompt"]) == 5        # the checkpoint's prompt_num
    assert (out / "scatter.png").stat().st_size > 1000


def test_leakage_warning_fires_when_leakage_is_found_and_stays_silent_without(data, checkpoints, tmp_path, capsys):
    args = ["--checkpoint", checkpoints["ours"], "--dataset", "koniq10k", "tid2013",
            *_roots(data, ("koniq10k", "tid2013")), "-j", "0", "--progress", "false", "--plot", "false"]
    assert evaluate_cli(args + ["--seed", "2024", "--save_path", str(tmp_path / "same")]) == 0
    err = capsys.readouterr().err
    assert "WARNING" not in err
    assert {r["leakage"] for r in _rows(tmp_path / "same" / "results.csv")[1]} == {"none"}

    assert evaluate_cli(args + ["--seed", "2025", "--save_path", str(tmp_path / "other")]) == 0
    out, err = capsys.readouterr()
    table = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] in (["koniq10k"], ["tid2013"])}
    rows = {r["dataset"]: r for r in _rows(tmp_path / "other" / "results.csv")[1]}
    for key in ("koniq10k", "tid2013"):
        ds = load_dataset(key, data[key])
        trained = set(make_split(ds, 2024).train_units)
        test = make_split(ds, 2025)
        units = [ds.records[i].reference if ds.split_by == "reference" else ds.records[i].name
                 for i in test.test_indices]
        expected = sum(u in trained for u in units)
        assert expected > 0 and rows[key]["leaked"] == str(expected) and rows[key]["leakage"] == "found"
        # one word in the terminal and the CSV: the table's leakage column, the warning line, results.csv
        assert table[key].endswith(f"  {rows[key]['leakage']} {rows[key]['leaked']}/{len(units)}")
        assert f"WARNING: leakage {rows[key]['leakage']}: {key}: {expected} of {len(units)} test images" in err


def test_official_format_file_may_include_training_images(data, tmp_path, capsys):
    # an official-format file (no config) of the tiny preset: load_model infers 112 px from its position embedding
    torch.manual_seed(0)
    model = build_model("promptiqa", preset="tiny")
    state = {"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "prompt_num": 10}
    torch.save(state, tmp_path / "best_model.pth.tar")
    # a dataset of one's own (csv kind, absolute image paths): not one of the release's training datasets
    labels = write_csv(tmp_path / "mine.csv", ["image", "score"],
                       [[str(Path(data["kadid"]) / "images" / f"I0{r}_0{j + 1}_01.png"), r + j]
                        for r in range(1, 6) for j in range(4)])
    out = tmp_path / "official"
    args = ["--checkpoint", str(tmp_path / "best_model.pth.tar"), "--backbone", "vit_tiny_patch16_224",
            "--dataset", "koniq10k", "mine", "--data_root", f"koniq10k={data['koniq10k']}", "--data_root",
            f"mine={labels}", "--isp_num", "3", "-j", "0", "--progress", "false", "--plot", "false",
            "--save_path", str(out)]
    assert evaluate_cli(args) == 0
    captured = capsys.readouterr()
    assert "koniq10k: official-format checkpoint without recorded training splits" in captured.err
    assert "may include training images" in captured.err and "mine:" not in captured.err
    rows = {r["dataset"]: r for r in _rows(out / "results.csv")[1]}
    assert rows["koniq10k"]["leakage"] == "unknown" and rows["koniq10k"]["leaked"] == ""
    assert "WARNING: leakage unknown: koniq10k: " in captured.err
    assert [line.split()[-1] for line in captured.out.splitlines() if line.startswith(("koniq10k ", "mine "))] == \
        ["unknown", "not_trained"]
    assert rows["mine"]["leakage"] == "not_trained"
    assert evaluate_cli(args + ["--split_file", "checkpoint"]) == 1
    assert "records no split for 'koniq10k'" in capsys.readouterr().err


def test_leakage_guard_compares_units_of_relabelled_copies(data, checkpoints):
    _, info = load_model(checkpoints["ours"], device="cpu", with_info=True)
    ds = load_dataset("tid2013", data["tid2013"])
    assert check_leakage(ds, make_split(ds, 2024), info).status == "none"
    leak = check_leakage(ds, make_split(ds, 2026), info)
    assert leak.status == "found" and leak.warns
    kadid = load_dataset("kadid", data["kadid"])
    assert check_leakage(kadid, make_split(kadid, 2024), info).status == "not_trained"
    # a dataset under another name (e.g. relabelled) is checked against the dataset it was made from
    koniq = load_dataset("koniq10k", data["koniq10k"])
    assert check_leakage(kadid, make_split(kadid, 2024), info, trained_key="koniq10k").status == "unknown"
    assert check_leakage(koniq, make_split(koniq, 2024), info, trained_key="koniq10k").status == "none"


@pytest.fixture
def train(data):
    """koniq10k's train split at seed 2024, 64 px: where the prompts below are sampled from."""
    ds = load_dataset("koniq10k", data["koniq10k"])
    split = make_split(ds, 2024)
    train = IQAImages([r.path for r in ds.records], normalise_labels(ds, split.train_indices), 64,
                      indices=split.train_indices)
    return train


def test_prompt_perturbations(train):
    plain = build_prompt(train, 5, "interval", seed=3)
    assert plain.positions == plain.sampled and plain.scores.tolist() == pytest.approx(
        train.labels[plain.sampled].tolist())
    # other_images: other real images of the train split, the scores kept
    others = build_prompt(train, 5, "interval", seed=3, perturb=["other_images"])
    assert not set(others.positions) & set(plain.sampled) and torch.equal(others.scores, plain.scores)
    assert torch.equal(others.images, stack_items(train, others.positions)[0])
    inverted = build_prompt(train, 5, "interval", seed=3, perturb=["inverted_scores"])
    assert torch.allclose(inverted.scores, 1 - plain.scores) and torch.equal(inverted.images, plain.images)
    scores = build_prompt(train, 5, "interval", seed=3, perturb=["random_scores", "other_images"])
    again = build_prompt(train, 5, "interval", seed=3, perturb=["other_images", "random_scores"])
    assert torch.equal(scores.scores, again.scores) and scores.positions == again.positions   # seeded, fixed order
    assert ((scores.scores >= 0) & (scores.scores <= 1)).all() and not torch.allclose(scores.scores, plain.scores)
    with pytest.raises(ValueError, match="unknown prompt perturbation"):
        build_prompt(train, 5, perturb=["shuffle"])
    with pytest.raises(ValueError, match="random_images and other_images both replace the prompt images"):
        build_prompt(train, 5, perturb=["other_images", "random_images"])
    with pytest.raises(ValueError, match="koniq10k: cannot sample 40"):
        build_prompt(train, 40, key="koniq10k")


def test_random_images_are_seeded_uniform_random_pixels(train):
    plain = build_prompt(train, 5, "interval", seed=3)
    noise = build_prompt(train, 5, "interval", seed=3, perturb=["random_images"])
    assert noise.images.dtype == torch.uint8 and noise.images.shape == plain.images.shape == (5, 3, 64, 64)
    assert torch.equal(noise.scores, plain.scores) and noise.positions == [None] * 5 and noise.sampled == plain.sampled
    assert [d["image"] for d in noise.describe(["x"] * len(train))] == ["random pixels"] * 5
    # uniform integers 0..255, every pixel and channel drawn on its own: the whole range, flat histogram
    counts = np.bincount(noise.images.flatten().numpy(), minlength=256)
    assert counts.size == 256 and counts.min() > 0 and counts.max() < 2 * counts.mean()
    assert abs(noise.images.double().mean().item() - 127.5) < 1
    assert not torch.equal(noise.images[:, 0], noise.images[:, 1]) and not torch.equal(noise.images[0], noise.images[1])
    # seeded by the ISP seed: the same seed gives the same images, another seed others
    assert torch.equal(build_prompt(train, 5, "interval", seed=3, perturb=["random_images"]).images, noise.images)
    assert not torch.equal(build_prompt(train, 5, "interval", seed=4, perturb=["random_images"]).images, noise.images)
    # the images have their own stream: adding them leaves the seed's random scores unchanged
    both = build_prompt(train, 5, "interval", seed=3, perturb=["random_images", "random_scores"])
    assert torch.equal(both.scores, build_prompt(train, 5, "interval", seed=3, perturb=["random_scores"]).scores)
    assert torch.equal(both.images, noise.images)


def test_feature_bank_scores_like_predict_split(data, checkpoints):
    ds = load_dataset("tid2013", data["tid2013"])
    split = make_split(ds, 2024)
    images = [r.path for r in ds.records]
    train = IQAImages(images, normalise_labels(ds, split.train_indices), 64, indices=split.train_indices)
    test = IQAImages(images, normalise_labels(ds, split.test_indices), 64, indices=split.test_indices)
    env = DistEnv()
    for name in ("ours", "wo"):
        model = load_model(checkpoints[name], device="cpu")
        p_images, p_scores = stack_items(train, [0, 3, 7, 11])
        expected = predict_split(model, test, env, p_images, p_scores, batch_size=3)
        got = FeatureBank(model, test, env, batch_size=2).score(p_images, p_scores)
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_evaluation_reads_with_workers_and_scores_alike(data, checkpoints, monkeypatch):
    import promptiqa.engine.inference as inference
    from promptiqa.data.views import load_views

    def seed_2024(records):
        return make_split(records, 2024), "seed 2024"

    views = [load_views(key, data[key], seed_2024, 64) for key in ("koniq10k", "tid2013")]
    positions = {v.key: v.isp_positions(4) for v in views}
    model = load_model(checkpoints["ours"], device="cpu")
    p_images, p_scores = stack_items(views[0].train, positions["koniq10k"])
    assert p_images.dtype == torch.uint8 and p_images.shape == (4, 3, 64, 64)   # normalised on the device
    inline = predict_split(model, views[0].test, DistEnv(), p_images, p_scores, batch_size=3, workers=0)
    assert np.array_equal(predict_split(model, views[0].test, DistEnv(), p_images, p_scores, batch_size=3, workers=2),
                          inline) and np.isfinite(inline).all()
    loaders = []

    def recorded(*args, **kwargs):
        loaders.append(kwargs["num_workers"])
        return images_loader(*args, **kwargs)

    images_loader = inference.ImageLoader
    monkeypatch.setattr(inference, "ImageLoader", recorded)
    with_workers = inference.evaluate_test_splits(model, views, positions, DistEnv(), batch_size=5, workers=2)
    assert loaders == [2, 2]
    assert with_workers == inference.evaluate_test_splits(model, views, positions, DistEnv(), batch_size=5)
    assert loaders == [2, 2, 0, 0]


def test_official_test_prompt_is_re_encoded_per_test_group_whatever_the_batch_size(data, checkpoints):
    ds = load_dataset("tid2013", data["tid2013"])
    split = make_split(ds, 2024)
    images = [r.path for r in ds.records]
    train = IQAImages(images, normalise_labels(ds, split.train_indices), 64, indices=split.train_indices)
    model = load_model(checkpoints["ours"], device="cpu")
    p_images, p_scores = stack_items(train, [0, 3, 7])    # n = 3 pairs: test groups of g = 4 images
    encode, calls = model.encode_prompt, []

    def counted(*args):
        calls.append(1)
        return encode(*args)

    model.encode_prompt = counted
    results = {}
    for batch_size in (4, 3, 6, 16):                       # = g, below g, across groups, the whole split
        calls.clear()
        torch.manual_seed(0)                                # the prompt images' random flips
        results[batch_size] = predict_split(model, train, DistEnv(), p_images, p_scores, batch_size=batch_size,
                                            official_prompt=True)
        assert len(calls) == 4                              # 16 images: one freshly flipped prompt per 4
    for batch_size in (3, 6, 16):
        np.testing.assert_allclose(results[batch_size], results[4], atol=1e-6)
    torch.manual_seed(0)
    fixed = predict_split(model, train, DistEnv(), p_images, p_scores, batch_size=16)
    assert not np.allclose(fixed, results[4], atol=1e-6)   # the flips change the prompt, so the scores


def test_torchrun_counts_every_test_image_once(data, checkpoints, tmp_path):
    common = ["--checkpoint", checkpoints["ours"], "--dataset", "koniq10k", "tid2013",
              *_roots(data, ("koniq10k", "tid2013")), "-j", "0", "--batch_size", "2", "--plot", "false"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "test.py"),
           *common, "--save_path", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in proc.stdout and proc.stdout.count("SROCC") == 1   # one rank prints
    assert evaluate_cli(common + ["--save_path", str(tmp_path / "one"), "--progress", "false"]) == 0
    ddp, one = _rows(tmp_path / "ddp" / "predictions.csv")[1], _rows(tmp_path / "one" / "predictions.csv")[1]
    assert [(r["dataset"], r["image"]) for r in ddp] == [(r["dataset"], r["image"]) for r in one]
    assert len({(r["dataset"], r["image"]) for r in ddp}) == 9
    np.testing.assert_allclose([float(r["pred"]) for r in ddp], [float(r["pred"]) for r in one], atol=1e-5)


# ---------------------------------------------------------------- 10 splits and the summary


def test_ten_splits_under_torchrun_shares_one_process_group(data, train_argv, tmp_path):
    root = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "scripts" / "ten_splits.py"), "--seeds", "2024", "2025", "--tests", "last", "--save_path",
           str(root), *train_argv(data, **TRAIN)]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("=== seed 2025") == 1 and "Seeds: PromptIQA: 2 (2024, 2025)" in proc.stdout
    folder = root / "seed_2025"
    assert (folder / "DONE.json").is_file()
    ddp = _rows(folder / "test_last" / "predictions.csv")[1]
    assert len({(r["dataset"], r["image"]) for r in ddp}) == len(ddp) == 9     # every test image once
    metrics = {r["dataset"]: r for r in _rows(folder / "metrics.csv")[1] if r["split"] == "test"}
    for r in _rows(folder / "test_last" / "results.csv")[1]:
        assert float(r["plcc"]) == pytest.approx(float(metrics[r["dataset"]]["plcc"]), abs=1e-5)




def _write_run(folder: Path, rows, finished=True, seed=None, val_rows=()):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metrics.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "dataset", "split", "srocc", "plcc", "krcc", "rmse", "loss"])
        for epoch, key, s, p in rows:
            writer.writerow([epoch, key, "test", s, p, 0.5, 0.1, "nan"])
            writer.writerow([epoch, key, "train", 0.0, 0.0, 0.0, 0.1, 0.2])    # train rows are ignored
        for epoch, key, s, p in val_rows:
            writer.writerow([epoch, key, "val", s, p, 0.5, 0.1, "nan"])
    if finished:
        (folder / "summary.json").write_text("{}")
    if seed is not None:
        (folder / "config.json").write_text(json.dumps({"seed": seed}))


def test_summariser_medians_against_hand_computed_values(tmp_path):
    root = tmp_path / "ten"
    # per seed: (live, csiq, mine) SROCC/PLCC at epoch 1 and 2; epoch 1 is the best epoch of seeds 2024 and 2026
    last = {2024: [(0.90, 0.91), (0.80, 0.82), (0.50, 0.40)],
            2025: [(0.70, 0.72), (0.60, 0.65), (0.30, 0.20)],
            2026: [(0.95, 0.96), (0.90, 0.93), (0.10, 0.00)]}
    first = {2024: [(0.99, 0.99), (0.99, 0.99), (0.99, 0.99)],
             2025: [(0.10, 0.10), (0.10, 0.10), (0.10, 0.10)],
             2026: [(0.97, 0.98), (0.96, 0.97), (0.95, 0.96)]}
    keys = ("live", "csiq", "mine")
    for seed in last:
        rows = [(1, k, *first[seed][i]) for i, k in enumerate(keys)] + [(2, k, *last[seed][i])
                                                                        for i, k in enumerate(keys)]
        _write_run(root / f"seed_{seed}", rows, seed=seed)
    _write_run(root / "seed_2027", [(1, "live", 1.0, 1.0)], finished=False)       # unfinished: skipped
    with pytest.warns(UserWarning, match="seed_2027: training has not finished"):
        summary = summarise_roots({"PromptIQA": [root]}, tmp_path / "out" / "summary")
    assert [t for t, _ in summary.groups] == ["synthetic", "other"]
    cells = summary.cells["PromptIQA"]
    # last epoch: live SROCC 0.90 0.70 0.95 -> median 0.90; csiq PLCC 0.82 0.65 0.93 -> median 0.82
    assert cells["last"]["live"]["srocc"].median == pytest.approx(0.90)
    assert cells["last"]["csiq"]["plcc"].median == pytest.approx(0.82)
    assert cells["last"]["mine"]["srocc"].mean == pytest.approx(0.30)
    assert cells["last"]["mine"]["srocc"].std == pytest.approx(np.std([0.5, 0.3, 0.1]))
    assert cells["last"]["synthetic avg"]["srocc"].median == pytest.approx((0.90 + 0.80) / 2)
    assert cells["last"]["synthetic avg"]["srocc"].std == pytest.approx(np.std([0.85, 0.65, 0.925]))
    # best epoch (max test SROCC + PLCC summed over datasets): 1, 2, 1 -> live SROCC 0.99, 0.70, 0.97
    assert cells["best"]["live"]["srocc"].median == pytest.approx(0.97)
    assert cells["best"]["live"]["srocc"].n == 3 and cells["best"]["live"]["srocc"].seeds == [2024, 2025, 2026]
    columns, rows = _rows(tmp_path / "out" / "summary.csv")
    assert columns == ["label", "selection", "task", "dataset", "metric", "median", "mean", "std", "n", "seeds",
                       "paper_row", "paper", "delta", "flag"]
    row = next(r for r in rows if r["selection"] == "best" and r["dataset"] == "live" and r["metric"] == "srocc")
    assert float(row["median"]) == pytest.approx(0.97) and row["seeds"] == "2024 2025 2026"
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert SELECTIONS["best"] in markdown and "| PromptIQA | median SROCC | 0.9000 | 0.8000 | 0.8500 |" in markdown
    from openpyxl import load_workbook

    book = load_workbook(tmp_path / "out" / "summary.xlsx")
    assert book.sheetnames == ["last epoch", "best epoch", "per seed"]
    sheet = book["last epoch"]
    assert [c.value for c in sheet[3]][:5] == ["method", "statistic", "live", "csiq", "synthetic avg"]
    assert sheet["C4"].value == pytest.approx(0.90) and "C2:E2" in [str(r) for r in sheet.merged_cells.ranges]


def test_summarise_labels_a_folder_alike_however_its_path_is_written_and_after_a_re_run(tmp_path, monkeypatch,
                                                                                         capsys):
    from promptiqa.experiments.summary import record_method

    mine, ten = tmp_path / "runs" / "mine", tmp_path / "runs" / "ten"
    for root in (mine, ten):
        for seed in (2024, 2025):
            _write_run(root / f"seed_{seed}", [(1, "live", 0.5, 0.6), (2, "live", 0.6, 0.7)], seed=seed)
    record_method(ten, "PromptIQA")     # what ten-splits records before its runs start
    for root, label in ((mine, "mine"), (ten, "PromptIQA")):
        written = []
        for spelling, where in ((str(root), tmp_path), (f"{root}/", tmp_path), (".", root),
                                (os.path.relpath(root, tmp_path), tmp_path)):
            monkeypatch.chdir(where)
            assert cli_main(["summarise", spelling, "--out", str(tmp_path / "summary")]) == 0
            written.append((tmp_path / "summary.csv").read_text())
            assert {r["label"] for r in _rows(tmp_path / "summary.csv")[1]} == {label}
        assert len(set(written)) == 1
    monkeypatch.chdir(tmp_path)
    assert cli_main(["summarise", str(ten / "seed_2024"), "--out", str(tmp_path / "one")]) == 0   # one seed of it
    assert {r["label"] for r in _rows(tmp_path / "one.csv")[1]} == {"PromptIQA"}


def test_summariser_selects_the_best_epoch_per_run_for_one_model_per_dataset(tmp_path):
    seed = tmp_path / "wo_mixed" / "seed_2024"
    _write_run(seed / "live", [(1, "live", 0.5, 0.5), (2, "live", 0.4, 0.4)])
    _write_run(seed / "csiq", [(1, "csiq", 0.5, 0.5), (2, "csiq", 0.6, 0.6)])
    run = read_seed_run(seed)
    assert run.finished and run.epochs["best"] == {"live": 1, "csiq": 2} and run.epochs["last"] == {"live": 2,
                                                                                                   "csiq": 2}


def _paper_csv():
    """{(table, row, dataset, metric): value} read straight from the shipped file (not through promptiqa.paper)."""
    from promptiqa.paper import PAPER_FILE

    with open(PAPER_FILE, newline="") as fh:
        return {(r["table"], r["row"], r["dataset"], r["metric"]): float(r["value"]) for r in csv.DictReader(fh)}


def test_summary_sets_the_papers_figures_beside_ours(tmp_path, capsys):
    figures = _paper_csv()
    table2 = {(d, m): v for (t, row, d, m), v in figures.items() if t == "table2"}
    keys = [d for d, m in table2 if m == "srocc" and not d.endswith("_average")]
    assert len(keys) == 12 and figures["table2", "promptiqa", "live", "srocc"] == 0.9359
    # a ten-splits run whose every seed scores exactly the paper's figures: Δ 0, nothing flagged
    root = tmp_path / "ten"
    for seed in (2024, 2025, 2026):
        _write_run(root / f"seed_{seed}", [(1, k, table2[k, "srocc"], table2[k, "plcc"]) for k in keys], seed=seed)
    # the w/o-prompt ablation (Table 6: PLCC on four datasets): tid2013 0.05 above the paper with a std of 0.0082
    # over seeds (flagged), spaq 0.004 above with a std of 0.0082 (not flagged)
    ablation = tmp_path / "wo_prompt"
    for seed, jitter in zip((2024, 2025, 2026), (-0.01, 0.0, 0.01)):
        _write_run(ablation / f"seed_{seed}", [(1, "tid2013", 0.5, figures["table6", "wo_prompt", "tid2013", "plcc"]
                                                  + 0.05 + jitter),
                                                 (1, "spaq", 0.5, figures["table6", "wo_prompt", "spaq", "plcc"]
                                                  + 0.004 + jitter)], seed=seed)
    assert cli_main(["summarise", str(root), str(ablation), "--out", str(tmp_path / "out" / "summary")]) == 0
    out = capsys.readouterr().out
    assert "Paper: the published figure of each median (ten: table2/promptiqa; wo_prompt: table6/wo_prompt" in out
    header = next(line for line in out.splitlines() if line.startswith("| method |")).split(" | ")
    row = next(line for line in out.splitlines() if line.startswith("| ten | paper SROCC |")).split(" | ")
    assert row[header.index("live")] == "0.9359" and row[header.index("uwiqa")] == f"{table2['uwiqa', 'srocc']:.4f}"
    delta = next(line for line in out.splitlines() if line.startswith("| ten | Δ PLCC |")).split(" | ")
    assert delta[header.index("kadid")] == "+0.0000" and delta[header.index("synthetic avg")] in ("+0.0000", "-0.0000")
    assert "| wo_prompt | Δ PLCC |" in out and "+0.0500 !" in out and "+0.0040 |" in out

    _, rows = _rows(tmp_path / "out" / "summary.csv")
    ours = {(r["label"], r["selection"], r["dataset"], r["metric"]): r for r in rows}
    for (key, metric), value in table2.items():   # every Table 2 figure, the task averages included
        column = key.replace("_average", " avg")
        for selection in ("last", "best"):   # no validation rows: no best_val selection
            r = ours["ten", selection, column, metric]
            assert float(r["paper"]) == value and r["paper_row"] == "table2/promptiqa" and r["flag"] == "0"
            assert abs(float(r["delta"])) <= (0 if column == key else 5e-5)   # averages: the paper's rounding
    flagged = ours["wo_prompt", "last", "tid2013", "plcc"]
    assert flagged["paper_row"] == "table6/wo_prompt" and flagged["flag"] == "1"
    assert float(flagged["delta"]) == pytest.approx(0.05)
    assert float(flagged["std"]) == pytest.approx(np.std([-0.01, 0, 0.01]))
    assert ours["wo_prompt", "last", "spaq", "plcc"]["flag"] == "0"
    # Table 6 gives no SROCC and no task average: empty, not 0
    assert {k: ours["wo_prompt", "last", "tid2013", "srocc"][k] for k in ("paper", "delta", "flag")} == dict.fromkeys(
        ("paper", "delta", "flag"), "")
    assert ours["wo_prompt", "last", "synthetic avg", "plcc"]["paper"] == ""

    from openpyxl import load_workbook

    sheet = load_workbook(tmp_path / "out" / "summary.xlsx")["best epoch"]
    names = [c.value for c in sheet[3]]
    by_statistic = {(r[0].value, r[1].value): r for r in sheet.iter_rows(min_row=4) if r[0].value}
    assert by_statistic["ten", "paper SROCC"][names.index("live")].value == 0.9359
    assert by_statistic["ten", "Δ SROCC"][names.index("live")].value == 0
    cell = by_statistic["wo_prompt", "Δ PLCC"][names.index("tid2013")]
    assert cell.value == pytest.approx(0.05) and cell.fill.fgColor.rgb.endswith("F4CCCC")
    assert by_statistic["wo_prompt", "Δ PLCC"][names.index("spaq")].fill.fill_type is None


def test_one_seed_is_flagged_against_the_stated_tolerance(tmp_path):
    from promptiqa.paper import TOLERANCE, Comparison, figure

    paper_live = _paper_csv()["table2", "promptiqa", "live", "srocc"]
    _write_run(tmp_path / "run", [(1, "live", paper_live - TOLERANCE / 2, 0.9), (1, "csiq", 0.5, 0.5)], seed=2024)
    summary = summarise_roots({"PromptIQA": [tmp_path / "run"]}, tmp_path / "summary")
    near = summary.comparison("PromptIQA", "last", "synthetic", "live", "srocc")
    far = summary.comparison("PromptIQA", "last", "synthetic", "csiq", "srocc")
    assert near.spread is None and near.delta == pytest.approx(-TOLERANCE / 2) and not near.flagged
    assert far.flagged and far.delta_text().endswith(" !")
    # the full model of the ablations is Table 2's row, whose PLCCs Table 6 repeats
    for key in ("tid2013", "spaq", "gfiqa_20k", "uwiqa"):
        assert figure(("table6", "full_model"), key, "plcc").value == figure(("table2", "promptiqa"), key, "plcc").value
    assert Comparison(float("nan"), figure(("table2", "promptiqa"), "live", "srocc")).fields()["delta"] is None


def test_summariser_adds_the_best_epoch_on_validation_beside_last_and_best(tmp_path):
    root = tmp_path / "ten"
    # test figures of live at epochs 1, 2, 3; the best on test is epoch 3 for both seeds
    test = {2024: [0.60, 0.70, 0.90], 2025: [0.50, 0.55, 0.80]}
    # validation picks epoch 2 for seed 2024 and epoch 1 for seed 2025 (a tie with epoch 3: the earlier)
    val = {2024: [0.1, 0.9, 0.5], 2025: [0.8, 0.2, 0.8]}
    for seed in test:
        _write_run(root / f"seed_{seed}", [(e + 1, "live", v, v) for e, v in enumerate(test[seed])], seed=seed,
                   val_rows=[(e + 1, "live", v, v) for e, v in enumerate(val[seed])])
    summary = summarise_roots({"PromptIQA": [root]}, tmp_path / "out" / "summary")
    assert summary.selections == ["last", "best", "best_val"]
    assert [r.epochs["best_val"]["live"] for r in summary.runs["PromptIQA"]] == [2, 1]
    assert [r.epochs["best"]["live"] for r in summary.runs["PromptIQA"]] == [3, 3]
    cells = summary.cells["PromptIQA"]
    assert cells["best_val"]["live"]["srocc"].median == pytest.approx((0.70 + 0.50) / 2)   # their test figures
    assert cells["best"]["live"]["srocc"].median == pytest.approx((0.90 + 0.80) / 2)
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert f"## {SELECTIONS['best_val']}" in markdown and f"## {SELECTIONS['best']}" in markdown
    _, rows = _rows(tmp_path / "out" / "summary.csv")
    assert {r["selection"] for r in rows} == {"last", "best", "best_val"}
    from openpyxl import load_workbook

    assert load_workbook(tmp_path / "out" / "summary.xlsx").sheetnames == ["last epoch", "best epoch",
                                                                           "best_val epoch", "per seed"]


def test_ten_splits_passes_val_fraction_through_and_tests_the_val_selected_checkpoint(data, train_argv, tmp_path,
                                                                                      capsys):
    root = tmp_path / "ten"
    argv = ["--seeds", "2024", "--save_path", str(root), *train_argv(data, **{**TRAIN, "epochs": 2}),
            "--val_fraction", "0.25"]
    assert cli_main(["ten-splits", "--tests", "best_val", *argv[2:-2]]) == 1     # no validation part, no checkpoint
    assert "--tests best_val needs --val_fraction" in capsys.readouterr().err
    assert ten_splits_main(argv) == 0
    folder = root / "seed_2024"
    assert json.loads((folder / "DONE.json").read_text())["tests"] == ["last", "best", "best_val"]
    chosen = json.loads((folder / "summary.json").read_text())["best_val"]
    metrics = {r["dataset"]: r for r in _rows(folder / "metrics.csv")[1]
               if r["split"] == "test" and int(r["epoch"]) == chosen["epoch"]}
    results = {r["dataset"]: r for r in _rows(folder / "test_best_val" / "results.csv")[1]}
    assert set(results) == {"koniq10k", "tid2013"} and {r["leakage"] for r in results.values()} == {"none"}
    for key, r in results.items():   # test.py on best_val_model.pth.tar reproduces that epoch's test figures
        assert float(r["srocc"]) == pytest.approx(float(metrics[key]["srocc"]), abs=1e-6)
        assert float(r["plcc"]) == pytest.approx(float(metrics[key]["plcc"]), abs=1e-5)
        assert float(r["srocc"]) == pytest.approx(chosen["test"][key]["srocc"], abs=1e-6)
    assert read_seed_run(folder).epochs["best_val"] == {"koniq10k": chosen["epoch"], "tid2013": chosen["epoch"]}
    assert f"## {SELECTIONS['best_val']}" in capsys.readouterr().out


def test_ten_splits_trains_tests_skips_and_summarises(data, train_argv, tmp_path, capsys):
    root = tmp_path / "ten"
    argv = ["--seeds", "2024", "2025", "--save_path", str(root), *train_argv(data, **TRAIN)]
    assert ten_splits_main(argv) == 0
    out = capsys.readouterr().out
    for seed in (2024, 2025):
        folder = root / f"seed_{seed}"
        assert (folder / "DONE.json").is_file() and json.loads((folder / "config.json").read_text())["seed"] == seed
        metrics = {r["dataset"]: r for r in _rows(folder / "metrics.csv")[1] if r["split"] == "test"}
        for which in ("last", "best"):
            results = {r["dataset"]: r for r in _rows(folder / f"test_{which}" / "results.csv")[1]}
            assert set(results) == {"koniq10k", "tid2013"} and {r["leakage"] for r in results.values()} == {"none"}
            for key, r in results.items():   # test.py reproduces the training-time evaluation
                assert float(r["srocc"]) == pytest.approx(float(metrics[key]["srocc"]), abs=1e-6)
                assert float(r["plcc"]) == pytest.approx(float(metrics[key]["plcc"]), abs=1e-5)
        best = json.loads((folder / "summary.json").read_text())["best"]["epoch"]
        assert read_seed_run(folder).epochs["best"]["koniq10k"] == best
    for ext in ("md", "csv", "xlsx"):
        assert (root / f"summary.{ext}").is_file()
    assert "Seeds: PromptIQA: 2 (2024, 2025)" in out
    summary = (root / "summary.csv").read_text()
    assert cli_main(["summarise", str(root)]) == 0                    # a re-run, as ten-splits suggests: same labels
    assert (root / "summary.csv").read_text() == summary and {r["label"] for r in _rows(root / "summary.csv")[1]} \
        == {"PromptIQA"}
    assert ten_splits_main(argv) == 0                                # finished seeds are skipped
    out = capsys.readouterr().out
    assert out.count("already done (DONE.json); skipped") == 2
    assert cli_main(["ten-splits", *argv, "--seed", "3"]) == 1
    assert "--seed cannot be given here" in capsys.readouterr().err
    assert cli_main(["ten-splits", "--seed_index", "10", *argv[3:]]) == 1
    assert f"in 0..{len(SPLIT_SEEDS) - 1}" in capsys.readouterr().err
    assert pick_seeds() == list(SPLIT_SEEDS) and pick_seeds(seed_index=1) == [SPLIT_SEEDS[1]] == [2025]


def test_ablation_variants_and_their_summary(data, train_argv, tmp_path, capsys):
    root = tmp_path / "ablation"
    argv = ["--variant", "wo_mixed", "wo_prompt", "--seeds", "2024", "--tests", "last", "--save_path", str(root),
            *train_argv(data, **TRAIN, random_scale_rate=0.5)]
    assert ablation_main(argv) == 0
    for key in ("koniq10k", "tid2013"):
        config = json.loads((root / "wo_mixed" / "seed_2024" / key / "config.json").read_text())
        assert config["dataset"] == [key]
    config = json.loads((root / "wo_prompt" / "seed_2024" / "config.json").read_text())
    assert config["model"] == "promptiqa_wo_prompt"
    assert load_model(root / "wo_prompt" / "seed_2024" / "last.pth.tar", device="cpu").arch == "promptiqa_wo_prompt"
    _, rows = _rows(root / "summary.csv")
    assert {r["label"] for r in rows} == {"w/o mixed training", "w/o prompt"}
    capsys.readouterr()
    assert cli_main(["ablation", "--variant", "wo_scaling", "--seeds", "2024", "--save_path", str(root),
                     *train_argv(data, **TRAIN, random_scale_rate=0.5)]) == 1
    assert "--random_scale_rate cannot be given here: variant wo_scaling sets it" in capsys.readouterr().err
    assert ablation_main(["--summarise", "--save_path", str(root)]) == 0
    assert cli_main(["summarise", str(root / "wo_prompt"), "--out", str(tmp_path / "again")]) == 0
    (row, *_) = [r for r in _rows(tmp_path / "again.csv")[1] if r["paper_row"]]
    assert row["label"] == "w/o prompt" and row["paper_row"] == "table6/wo_prompt"   # labelled as the ablation did


# ---------------------------------------------------------------- ISP experiments


def test_paper_rows_of_our_names_exist(tmp_path):
    from promptiqa.evaluation.prompts import PERTURBATIONS
    from promptiqa.experiments.protocol import VARIANTS
    from promptiqa.experiments.relabel import METHOD_TITLES
    from promptiqa.paper import figures as paper

    rows = {(t, row) for t, row, _, _ in _paper_csv()}
    assert set(paper.VARIANT_ROWS) == set(VARIANTS) and set(paper.VARIANT_ROWS.values()) <= rows
    assert set(paper.TABLE3_ROWS) == set(METHOD_TITLES)
    assert {("table3", r.format(training=t)) for r in paper.TABLE3_ROWS.values() for t in ("sdt", "mdt")} <= rows
    assert {("table4", r) for r in [*paper.TABLE4_ROWS.values(), paper.TABLE4_RANDOM_STD]} <= rows
    assert {("table5", r) for r in [*paper.TABLE5_ROWS.values(), *paper.TABLE5_RANDOM]} <= rows
    assert set(paper.RANDOM_PERTURBATIONS) | set(paper.TABLE5_ROWS) - {"none"} <= set(PERTURBATIONS)
    assert paper.table3_training(["tid2013"], "tid2013") == "sdt" and paper.table3_training([], "kadid") == "mdt"
    assert paper.table3_training(["koniq10k"], "kadid") is None
    assert paper.paper_value("table2", "promptiqa", "live", "srocc") == 0.9359
    assert paper.paper_value("table2", "promptiqa", "live", "krcc") is None
    # a damaged copy of the file: one line naming it and what was expected
    bad = tmp_path / "paper_tables.csv"
    bad.write_text("table,row,dataset,metric,value\ntable2,promptiqa,live,srocc,high\n")
    with pytest.raises(ValueError, match=r"paper_tables.csv, line 2: expected table,row,dataset,metric,value with a "
                                         r"number as value"):
        paper.paper_table(bad)
    bad.write_text("dataset,value\n")
    with pytest.raises(ValueError, match="paper_tables.csv: expected the header table,row,dataset,metric,value"):
        paper.paper_table(bad)


def test_isp_experiments_write_tables_and_plot(data, checkpoints, tmp_path):
    common = ["--checkpoint", checkpoints["ours"], "--dataset", "koniq10k", "tid2013",
              *_roots(data, ("koniq10k", "tid2013")), "-j", "0", "--progress", "false", "--save_path", str(tmp_path)]
    assert isp_main(["selection", *common, "--draws", "3", "--isp_seed", "5"]) == 0
    _, rows = _rows(tmp_path / "isp_selection.csv")
    randoms = [r for r in rows if r["dataset"] == "koniq10k" and r["strategy"] == "random"]
    assert [r["isp_seed"] for r in randoms] == ["5", "6", "7"] and {r["isp_num"] for r in rows} == {"5"}
    std = np.std([float(r["plcc"]) for r in randoms])
    table = (tmp_path / "isp_selection.md").read_text()
    assert f"± {std:.4f}" in table and "random PLCC (3 draws)" in table
    # Table 4's figures beside ours: koniq10k is in Table 4, tid2013 is not
    figures = _paper_csv()
    interval = next(r for r in rows if r["dataset"] == "koniq10k" and r["strategy"] == "interval")
    assert figures["table4", "interval", "koniq10k", "srocc"] == 0.9287
    assert (f"| koniq10k: paper | 0.9287 | {figures['table4', 'interval', 'koniq10k', 'plcc']:.4f} | 0.9201 ± 0.0156 "
            f"| {figures['table4', 'random_mean', 'koniq10k', 'plcc']:.4f} ± "
            f"{figures['table4', 'random_std', 'koniq10k', 'plcc']:.4f} |") in table
    assert f"| koniq10k: Δ | {float(interval['srocc']) - 0.9287:+.4f}" in table and "tid2013: paper" not in table
    _, compared = _rows(tmp_path / "isp_selection_paper.csv")
    got = {(r["dataset"], r["strategy"], r["metric"]): r for r in compared}
    random_plcc = got["koniq10k", "random", "plcc"]
    assert float(random_plcc["paper"]) == figures["table4", "random_mean", "koniq10k", "plcc"]
    assert float(random_plcc["spread"]) == pytest.approx(std) and random_plcc["n"] == "3"
    assert float(random_plcc["delta"]) == pytest.approx(float(random_plcc["ours"]) - float(random_plcc["paper"]))
    assert random_plcc["flag"] == str(int(abs(float(random_plcc["delta"])) > max(std, 5e-5)))
    assert got["koniq10k", "interval", "srocc"]["paper_row"] == "table4/interval"
    assert got["tid2013", "interval", "srocc"]["paper"] == got["tid2013", "interval", "srocc"]["delta"] == ""
    assert isp_main(["size", *common, "--sizes", "3", "5", "7"]) == 0
    _, rows = _rows(tmp_path / "isp_size.csv")
    assert [r["isp_num"] for r in rows if r["dataset"] == "tid2013"] == ["3", "5", "7"]
    assert (tmp_path / "isp_size.png").stat().st_size > 1000 and "| average |" in (tmp_path / "isp_size.md").read_text()
    assert "Fig. 3 only as a plot" in (tmp_path / "isp_size.md").read_text()
    assert not (tmp_path / "isp_size_paper.csv").exists()
    assert isp_main(["perturb", *common, "--conditions", "none", "inverted_scores",
                     "random_images+random_scores", "other_images"]) == 0
    _, rows = _rows(tmp_path / "isp_perturbations.csv")
    assert [r["condition"] for r in rows if r["dataset"] == "koniq10k"] == ["none", "inverted_scores",
                                                                             "random_images+random_scores",
                                                                             "other_images"]
    # Table 5's figures beside ours; a random condition beside the range of the paper's three random rows
    _, compared = _rows(tmp_path / "isp_perturbations_paper.csv")
    got = {(r["dataset"], r["condition"], r["metric"]): r for r in compared}
    for key in ("koniq10k", "tid2013"):
        for metric in ("srocc", "plcc"):
            assert float(got[key, "none", metric]["paper"]) == figures["table5", "standard", key, metric]
            assert float(got[key, "inverted_scores", metric]["paper"]) == figures["table5", "inverted_scores", key,
                                                                                  metric]
            randoms = [figures["table5", f"random_row{i}", key, metric] for i in (1, 2, 3)]
            r = got[key, "random_images+random_scores", metric]
            assert r["paper"] == f"{min(randoms)!r}..{max(randoms)!r}" and r["paper_row"] == "table5/random_row1..3"
            ours = float(r["ours"])
            outside = ours - min(max(ours, min(randoms)), max(randoms))
            assert float(r["delta"]) == pytest.approx(outside) and r["flag"] == str(int(abs(outside) > 0.02))
            assert got[key, "other_images", metric]["paper"] == ""   # not the paper's experiment
    assert figures["table5", "standard", "tid2013", "srocc"] == 0.903
    table = (tmp_path / "isp_perturbations.md").read_text()
    assert "| none: paper | 0.9287 |" in table and "| random_images+random_scores: paper | 0.0299..0.4374 |" in table
    assert "other_images: paper" not in table
    # the unperturbed condition reproduces test.py's numbers
    assert evaluate_cli(common[:-1] + [str(tmp_path / "t"), "--plot", "false"]) == 0
    plain = {r["dataset"]: r for r in _rows(tmp_path / "t" / "results.csv")[1]}
    for r in rows:
        if r["condition"] == "none":
            assert float(r["srocc"]) == pytest.approx(float(plain[r["dataset"]]["srocc"]), abs=1e-9)


# ---------------------------------------------------------------- Table 3


def test_relabel_and_table3(data, checkpoints, tmp_path, monkeypatch, capsys):
    piq = pytest.importorskip("piq")
    from promptiqa.experiments import relabel as relabel_module

    real = relabel_module.build_fr_metric

    def offline(name, device):
        if name == "lpips":
            raise relabel_module.MetricUnavailable("LPIPS needs downloaded weights ... Skipping LPIPS")
        return real(name, device)

    monkeypatch.setattr(relabel_module, "build_fr_metric", offline)
    labels = tmp_path / "relabelled"
    assert cli_main(["relabel", "--dataset", "tid2013", "kadid", *_roots(data, ("tid2013", "kadid")),
                     "--out_dir", str(labels), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "Skipping LPIPS" in err and "skipped (see the warnings above): lpips" in err
    assert sorted(p.name for p in labels.glob("*.csv")) == ["kadid_fsim.csv", "kadid_ssim.csv", "tid2013_fsim.csv",
                                                             "tid2013_ssim.csv"]
    # a csv-kind dataset over the same images and references: same split as the source for a seed, SSIM values
    source = load_dataset("tid2013", data["tid2013"])
    mine = load_dataset("tid2013_ssim", labels / "tid2013_ssim.csv")
    assert mine.split_by == "reference" and make_split(mine, 2025).test_units == make_split(source, 2025).test_units
    record = source.records[0]
    x = relabel_module._read_rgb01(record.path)[None]
    y = relabel_module._read_rgb01(relabel_module.reference_files(source)[record.reference])[None]
    assert mine.records[0].score == pytest.approx(float(piq.ssim(x, y, data_range=1.0)), abs=1e-6)

    out = tmp_path / "table3"
    assert cli_main(["relabel-eval", "--checkpoint", checkpoints["ours"], "--baseline", checkpoints["wo"],
                     "--labels_dir", str(labels), "--isp_num", "5", "--finetune_steps", "2", "-j", "0",
                     "--progress", "false", "--save_path", str(out)]) == 0
    table = (out / "table3.md").read_text()
    assert "| method | TID2013 SSIM | TID2013 FSIM | KADID-10k SSIM | KADID-10k FSIM |" in table
    for method in ("w/o prompt (zero-shot)", "w/o prompt (fine-tuned on the 5 ISPs)", "PromptIQA"):
        assert f"| {method} |" in table
    _, rows = _rows(out / "table3.csv")
    assert len(rows) == 12 and {r["source"] for r in rows} == {"tid2013", "kadid"}
    # beside each PLCC the paper's Table 3 figure of a mixed-trained model (both checkpoints record two datasets)
    figures = _paper_csv()
    paper_rows = {"PromptIQA": "promptiqa_mdt_few_shot", "w/o prompt (zero-shot)": "monet_mdt_zero_shot",
                  "w/o prompt (fine-tuned on the 5 ISPs)": "monet_mdt_ft_few_shot"}
    for r in rows:
        value = figures["table3", paper_rows[r["method"]], f"{r['source']}:{r['requirement']}", "plcc"]
        assert r["paper_row"] == f"table3/{paper_rows[r['method']]}" and float(r["paper_plcc"]) == value
        assert float(r["delta_plcc"]) == pytest.approx(float(r["plcc"]) - value, abs=1e-12)
        assert r["flag"] == str(int(abs(float(r["delta_plcc"])) > 0.02))
    assert figures["table3", "promptiqa_mdt_few_shot", "tid2013:ssim", "plcc"] == 0.5992
    header = table.splitlines()[2].split(" | ")
    line = next(x for x in table.splitlines() if x.startswith("| PromptIQA: paper |")).split(" | ")
    assert line[header.index("TID2013 SSIM")] == "0.5992" and "| PromptIQA: Δ |" in table
    assert "PromptIQA: table3/promptiqa_mdt_few_shot" in table
    # the relabelled tid2013 test split is the source's seed-2024 test split: disjoint from the recorded training
    leakage = json.loads((out / "table3.json").read_text())["leakage"]
    assert leakage["tid2013_ssim"]["status"] == "none" and leakage["kadid_ssim"]["status"] == "not_trained"


def test_few_shot_fine_tuning_fits_the_isps(checkpoints):
    from promptiqa.experiments.relabel import finetune_few_shot

    model = load_model(checkpoints["wo"], device="cpu")
    torch.manual_seed(0)
    pixels, scores = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8), torch.linspace(0.1, 0.9, 6)
    images = normalise(pixels)
    before = torch.nn.functional.l1_loss(model(images), scores).item()
    tuned = finetune_few_shot(model, pixels, scores, steps=8, lr=1e-3)   # the ISPs as an ISPP holds them: uint8
    assert not tuned.training and model is not tuned
    assert torch.nn.functional.l1_loss(tuned(images), scores).item() < before
    assert torch.equal(model(images), load_model(checkpoints["wo"], device="cpu")(images))   # the original is intact
