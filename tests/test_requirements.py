"""Requirements as data (issue 33, item 1): `key:requirement` names another label column of a dataset, with its
dataset's images, units and split; and held-out datasets (item 2): --exclude / configs/leave_one_out.yaml and the
leakage guard's verdict on them. Label-only roots are built from the real published label files in ../shared."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch

from promptiqa.cli import main as cli_main
from promptiqa.config import resolve_config
from promptiqa.data import SPLIT_SEEDS, load_dataset, make_split, normalise_labels, official_train_order
from promptiqa.data.registry import REQUIREMENTS, requirement_keys
from promptiqa.engine.trainer import launch
from promptiqa.evaluation.leakage import check_leakage
from promptiqa.models import build_model, checkpoint_config, load_model, save_checkpoint
from tests.fixtures.datasets import write_csv, write_image, write_xlsx
from tests.helpers import ROOT, _mapping, _table

SPAQ_ATTRIBUTES = ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")


def _attribute(index: int, k: int) -> float:
    """A fixture attribute score of image ``index`` (SPAQ's attributes are only in the unpublished workbook): five
    columns that rank the images differently, on 0-100."""
    return float((index * (7 + 4 * k) + 13 * k) % 97 + 1.5)


@pytest.fixture(scope="module")
def roots(shared_dir, labels_dir, tmp_path_factory):
    """Label-only roots of agiqa_3k, aigciqa2023 and spaq from build_label_fixtures.py, with what the real releases
    hold and the script does not write: AIGCIQA2023's mosz2.mat and mosz3.mat (from the csv export of the release's
    .mat files) and SPAQ's attribute columns (fixture values beside the real MOS)."""
    script = shared_dir / "datasets" / "build_label_fixtures.py"
    if not script.is_file():
        pytest.skip(f"{script} is not present")
    out = tmp_path_factory.mktemp("label_roots")
    proc = subprocess.run([sys.executable, str(script), str(out), "--keys", "agiqa_3k", "aigciqa2023", "spaq"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(labels_dir / "aigciqa2023" / "AIGCIQA2023.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for number, column in ((2, "authenticity_mos"), (3, "correspondence_mos")):
        scipy.io.savemat(str(out / "aigciqa2023" / "DATA" / "MOS" / f"mosz{number}.mat"),
                         {"MOSz": np.asarray([float(r[column]) for r in rows])[:, None]})
    with open(labels_dir / "spaq" / "SPAQ.txt", newline="") as handle:
        mos = [(r["dis_img_path"].rsplit("/", 1)[1], float(r["score"])) for r in csv.DictReader(handle)]
    write_xlsx(out / "spaq" / "Annotations" / "MOS_and_Image_attribute_scores.xlsx",
               [["Image name", "MOS", *SPAQ_ATTRIBUTES]]
               + [[name, score] + [_attribute(i, k) for k in range(5)] for i, (name, score) in enumerate(mos)])
    return {"agiqa_3k": out / "agiqa_3k", "aigciqa2023": out / "aigciqa2023", "spaq": out / "spaq",
            "csv": {r["name"]: r for r in rows}, "spaq_mos": mos}


@pytest.fixture(scope="module")
def loaded(roots):
    """``loaded(key)``: the records of a key on its label-only root, read once per module (SPAQ's workbook takes
    seconds)."""
    cache = {}

    def load(key):
        if key not in cache:
            cache[key] = load_dataset(key, roots[key.split(":")[0]], check_images=False)
        return cache[key]
    return load


def _agiqa_column(labels_dir, column):
    with open(labels_dir / "agiqa_3k" / "data.csv", newline="") as handle:
        return [float(r[column]) for r in csv.DictReader(handle)]


def test_requirements_read_their_columns_of_the_real_label_files(roots, loaded, labels_dir):
    def scores(key):
        return [r.score for r in loaded(key).records]

    assert scores("agiqa_3k:align") == _agiqa_column(labels_dir, "mos_align")
    assert scores("agiqa_3k") == scores("agiqa_3k:quality") == _agiqa_column(labels_dir, "mos_quality")
    for requirement in ("quality", "authenticity", "correspondence"):
        expected = [float(roots["csv"][f"{i}.png"][f"{requirement}_mos"]) for i in range(2400)]
        assert scores(f"aigciqa2023:{requirement}") == pytest.approx(expected, abs=1e-9)
    assert scores("spaq") == [score for _, score in roots["spaq_mos"]]
    for k, attribute in enumerate(SPAQ_ATTRIBUTES):
        assert scores(f"spaq:{attribute.lower()}") == [_attribute(i, k) for i in range(11125)]
    # the default requirement named is the dataset itself: the same key, numbers and notes
    quality, plain = (load_dataset(k, roots["agiqa_3k"], check_images=False) for k in ("agiqa_3k:quality",
                                                                                        "agiqa_3k"))
    assert quality == plain and plain.key == "agiqa_3k"
    align = load_dataset("agiqa_3k:align", roots["agiqa_3k"], check_images=False)
    assert (align.key, align.official_divisor, align.higher_is_better) == ("agiqa_3k:align", 5.0, True)
    labels = normalise_labels(align)
    assert labels.min() == pytest.approx(0.021462288 / 5) and labels.max() == pytest.approx(4.286204297 / 5)


@pytest.mark.parametrize("key", [k for base in REQUIREMENTS for k in requirement_keys(base)[1:]])
def test_a_requirement_splits_its_images_as_its_dataset_for_every_seed(loaded, key):
    plain, other = loaded(key.split(":")[0]), loaded(key)
    assert [r.name for r in plain.records] == [r.name for r in other.records] and plain.units == other.units
    for seed in SPLIT_SEEDS:
        a, b = make_split(plain, seed), make_split(other, seed)
        assert (a.train_units, a.test_units, a.train_indices) == (b.train_units, b.test_units, b.train_indices)
        assert official_train_order(plain, a) == official_train_order(other, b)


def run_check(capsys, *argv):
    status = cli_main(["check", *map(str, argv)])
    lines = capsys.readouterr().out.rstrip("\n").split("\n")
    return status, lines, json.loads(lines[-1])


@pytest.mark.parametrize("key, images, low, high, label_max", [
    ("agiqa_3k:align", 2982, 0.021462288, 4.286204297, 4.286204297 / 5),
    ("aigciqa2023:authenticity", 2400, 28.41793922, 73.71914172, 0.7371914172),
    ("aigciqa2023:correspondence", 2400, 27.6925807, 72.39306622, 0.7239306622),
    ("spaq:noisiness", 11125, 1.5, 97.5, 0.975),
])
def test_check_reads_a_requirement_on_a_label_only_root(roots, capsys, key, images, low, high, label_max):
    status, lines, report = run_check(capsys, "--dataset", key, "--root", roots[key.split(":")[0]], "--no-images",
                                      "--json")
    assert status == 0 and report["ok"] and report["problems"] == [], report["problems"]
    assert (report["dataset"], report["images"], report["expected_images"]) == (key, images, images)
    assert (report["score_min"], report["score_max"]) == pytest.approx((low, high))
    assert report["label_max"] == pytest.approx(label_max) and report["higher_is_better"] is True
    assert lines[0].startswith(f"dataset     {key}  (") and any(f"requirement {key.split(':')[1]}: " in line
                                                                for line in lines)


def test_an_unknown_requirement_is_one_line_naming_the_datasets_requirements(roots, capsys, tmp_path):
    status, lines, report = run_check(capsys, "--dataset", "agiqa_3k:sharpness", "--root", roots["agiqa_3k"],
                                      "--no-images", "--json")
    assert status == 1 and report["problems"] == [
        f"[agiqa_3k:sharpness] unknown requirement 'sharpness' of agiqa_3k: {roots['agiqa_3k']} (expected one of "
        f"agiqa_3k, agiqa_3k:align (docs/datasets.md#requirements))"]
    # test.py refuses it before loading a model, in one line
    assert cli_main(["test", "--checkpoint", str(tmp_path / "none.pth.tar"), "--dataset", "spaq:align",
                     "--data_root", f"spaq={roots['spaq']}", "--save_path", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: [spaq:align] unknown requirement 'align' of spaq: {roots['spaq']} (expected one of spaq, "
                   "spaq:brightness, spaq:colorfulness, spaq:contrast, spaq:noisiness, spaq:sharpness "
                   "(docs/datasets.md#requirements))"]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- test.py on requirements, and the leakage guard


def _micro_checkpoint(path: Path, splits: dict, seed: int = 0) -> str:
    torch.manual_seed(seed)
    model = build_model("promptiqa", preset="micro")
    return str(save_checkpoint(path, model, config=checkpoint_config(
        model, prompt_num=5, label_norm="official", splits=splits, datasets=list(splits))))


@pytest.fixture(scope="module")
def agiqa_subset(labels_dir, tmp_path_factory):
    """An AGIQA-3K root holding the first 30 rows of the real data.csv and a synthetic 16x16 image for each (the model
    scores every test image, so the whole dataset would take minutes on a CPU)."""
    root = tmp_path_factory.mktemp("agiqa_subset")
    with open(labels_dir / "agiqa_3k" / "data.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[:31]
    with open(root / "data.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    assert rows[0][0] == "name" and len(rows) == 31
    rng = np.random.default_rng(0)
    (root / "img").mkdir()
    for row in rows[1:]:
        cv2.imwrite(str(root / "img" / row[0]), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return root


def _results(out: Path):
    with open(out / "results.csv", newline="") as handle:
        results = {r["dataset"]: r for r in csv.DictReader(handle)}
    with open(out / "predictions.csv", newline="") as handle:
        predictions = list(csv.DictReader(handle))
    return results, predictions


def test_test_py_scores_each_requirement_on_its_datasets_images_and_leakage_follows_the_images(
        agiqa_subset, tmp_path, capsys):
    ds = load_dataset("agiqa_3k", agiqa_subset)
    split = make_split(ds, 2024)
    trained = {"agiqa_3k": {"seed": 2024, "split_by": "image", "train": split.train_units, "test": split.test_units}}
    checkpoint = _micro_checkpoint(tmp_path / "agiqa.pth.tar", trained)
    keys = ["agiqa_3k", "agiqa_3k:align"]
    common = ["test", "--checkpoint", checkpoint, "--dataset", *keys, "--data_root", f"agiqa_3k={agiqa_subset}",
              "-j", "0", "--device", "cpu", "--progress", "false", "--plot", "false"]
    # the checkpoint's recorded split of `agiqa_3k` is its requirement's too: nothing leaked
    assert cli_main(common + ["--split_file", "checkpoint", "--save_path", str(tmp_path / "own")]) == 0
    results, predictions = _results(tmp_path / "own")
    assert list(results) == keys and {r["leakage"] for r in results.values()} == {"none"}
    by_key = {key: [p for p in predictions if p["dataset"] == key] for key in keys}
    names = [[p["image"] for p in rows] for rows in by_key.values()]
    assert len(names[0]) == 6 and names[0] == names[1]   # the same test images
    with open(agiqa_subset / "data.csv", newline="", encoding="utf-8") as handle:
        align = {f"img/{r['name']}": float(r["mos_align"]) / 5 for r in csv.DictReader(handle)}
    assert [float(p["gt"]) for p in by_key[keys[1]]] == pytest.approx([align[p["image"]] for p in by_key[keys[1]]],
                                                                      abs=1e-6)
    assert [p["gt"] for p in by_key[keys[0]]] != [p["gt"] for p in by_key[keys[1]]]
    # another seed's test split holds images the checkpoint trained on as `agiqa_3k`: found for its requirement too
    _, info = load_model(checkpoint, device="cpu", with_info=True)
    align = load_dataset("agiqa_3k:align", agiqa_subset)
    leaked = sum(u in set(split.train_units) for u in make_split(ds, 2025).test_units)
    verdict = check_leakage(align, make_split(align, 2025), info)
    assert leaked > 0 and (verdict.status, verdict.leaked) == ("found", leaked)
    assert "in the checkpoint's training split of 'agiqa_3k' (the same images)" in verdict.message


# ---------------------------------------------------------------- the csv kind's extra score columns


@pytest.fixture(scope="module")
def mine(tmp_path_factory):
    """A csv dataset with columns image,score,reference,sharpness (5 references x 4 images); sharpness reverses
    score."""
    base = tmp_path_factory.mktemp("mine")
    rows = []
    for r in range(5):
        for j in range(4):
            name = f"images/r{r}_{j}.png"
            write_image(base / name, seed=10 * r + j)
            rows.append([name, 1 + r + j / 4, f"ref{r}", 10 - (r + j / 4)])
    return write_csv(base / "labels.csv", ["image", "score", "reference", "sharpness"], rows)


def test_a_csv_datasets_extra_score_column_is_a_requirement(mine, tmp_path, capsys):
    plain, sharp, named = (load_dataset(k, mine) for k in ("mine", "mine:sharpness", "mine:score"))
    assert named == plain and sharp.key == "mine:sharpness"
    assert [r.score for r in sharp.records] == [10 - s + 1 for s in (r.score for r in plain.records)]
    assert sharp.units == plain.units and sharp.split_by == "reference"
    for seed in SPLIT_SEEDS[:3]:
        assert make_split(sharp, seed).test_indices == make_split(plain, seed).test_indices
    assert list(normalise_labels(sharp)) == pytest.approx([1 - x for x in normalise_labels(plain)])
    for key in ("mine:reference", "mine:blur"):
        with pytest.raises(ValueError, match=r"unknown requirement .* \(expected one of mine, mine:sharpness "
                                             r"\(its columns: image, score, reference, sharpness\)\)"):
            load_dataset(key, mine)
    checkpoint = _micro_checkpoint(tmp_path / "micro.pth.tar", {})
    out = tmp_path / "test"
    assert cli_main(["test", "--checkpoint", checkpoint, "--dataset", "mine", "mine:sharpness", "--data_root",
                     f"mine={mine}", "-j", "0", "--device", "cpu", "--progress", "false", "--plot", "false",
                     "--save_path", str(out)]) == 0
    results, predictions = _results(out)
    assert list(results) == ["mine", "mine:sharpness"] and all(r["n"] == "4" for r in results.values())
    assert {r["leakage"] for r in results.values()} == {"not_trained"}
    gt = {key: [float(p["gt"]) for p in predictions if p["dataset"] == key] for key in results}
    assert gt["mine:sharpness"] == pytest.approx([1 - x for x in gt["mine"]])


# ---------------------------------------------------------------- held-out datasets


def test_leave_one_out_config_holds_a_dataset_out_of_the_papers_mix():
    paper = resolve_config(["--config", "paper"]).dataset
    cfg = resolve_config(["--config", "leave_one_out"])
    assert cfg.exclude == ["koniq10k"] and cfg.dataset == [k for k in paper if k != "koniq10k"]
    other = resolve_config(["--config", "leave_one_out", "--exclude", "agiqa_3k", "uwiqa"])
    assert other.dataset == [k for k in paper if k not in ("agiqa_3k", "uwiqa")]
    # a dataset is held out with its requirements (the same images)
    assert resolve_config(["--dataset", "agiqa_3k", "agiqa_3k:align", "spaq", "--exclude", "agiqa_3k"]).dataset == \
        ["spaq"]
    with pytest.raises(ValueError, match="--exclude konig10k: not in the training mix"):
        resolve_config(["--config", "leave_one_out", "--exclude", "konig10k"])
    with pytest.raises(ValueError, match="--exclude leaves no dataset of the training mix"):
        resolve_config(["--dataset", "spaq", "--exclude", "spaq"])


def test_a_held_out_dataset_is_reported_unseen_by_the_leakage_guard(data, mine, train_argv, tmp_path):
    """train.py on koniq10k, csiq and a csv requirement with --exclude koniq10k, stopped after one step (its
    checkpoint records the splits): it records csiq and mine:sharpness only; koniq10k is not_trained, and `mine` is
    judged by the images `mine:sharpness` trained on."""
    run = tmp_path / "run"
    roots = {**data, "mine:sharpness": str(mine)}
    launch(resolve_config(train_argv(roots, run, epochs=1, exclude=["koniq10k"], stop_after_steps=1)))
    _, info = load_model(run / "last.pth.tar", device="cpu", with_info=True)
    assert info["config"]["datasets"] == ["csiq", "mine:sharpness"]
    assert sorted(info["config"]["splits"]) == ["csiq", "mine:sharpness"]
    koniq = load_dataset("koniq10k", data["koniq10k"])
    verdict = check_leakage(koniq, make_split(koniq, 2024), info)
    assert verdict.status == "not_trained" and not verdict.warns
    assert "the checkpoint was not trained on 'koniq10k'" in verdict.message
    csiq = load_dataset("csiq", data["csiq"])
    assert check_leakage(csiq, make_split(csiq, 2024), info).status == "none"
    assert check_leakage(csiq, make_split(csiq, 2025), info).status == "found"
    plain = load_dataset("mine", mine)
    assert check_leakage(plain, make_split(plain, 2024), info).status == "none"
    assert check_leakage(plain, make_split(plain, 2026), info).status == "found"


def test_the_requirements_table_of_the_docs_is_the_registry():
    table = _table((ROOT / "docs" / "datasets.md").read_text(encoding="utf-8"), "requirement | column")
    assert list(table) == [key for base in REQUIREMENTS for key in requirement_keys(base)[1:]]
    for key, (column, raw, polarity, mapping, source) in table.items():
        base, name = key.split(":")
        requirement = REQUIREMENTS[base][name]
        assert _mapping(mapping) == (requirement.offset, requirement.divisor), key
        assert (polarity == "higher") == requirement.higher_is_better, key
        assert requirement.column in column, key


def test_check_splits_compares_a_requirements_split_with_its_datasets_published_one(loaded, tmp_path, capsys):
    from promptiqa.data import save_splits

    save_splits(tmp_path / "splits.json", {key: make_split(loaded(key), 2024)
                                           for key in ("agiqa_3k:align", "spaq:sharpness")})
    status, lines, report = run_check(capsys, "--splits", tmp_path / "splits.json", "--json")
    assert status == 0 and report["ok"] and report["compared"] == 2, lines
    assert [line.split()[:4] for line in lines if line.startswith(("agiqa_3k:", "spaq:"))] == \
        [[key, "seed", "2024", "equal"] for key in ("agiqa_3k:align", "spaq:sharpness")]
