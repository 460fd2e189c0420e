"""The published splits (promptiqa/data/published_splits.json.gz): a plain gzip/JSON file that follows its stated
rule, re-made identically from the public label files, and `promptiqa check --splits`, which tells whether a run's
splits (its folder, a split file, a checkpoint) equal them."""
from __future__ import annotations

import dataclasses
import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from promptiqa.cli import main as cli_main
from promptiqa.data import check, load_dataset, make_split, save_splits
from promptiqa.data.published import PUBLISHED_FILE, compare_split, main as publish_main, read_published
from promptiqa.data.registry import DATASET_SPECS
from promptiqa.data.splits import SPLIT_SEEDS, SplitError, carve_validation
from tests.fixtures.datasets import write_bid_labels, write_csv, write_image, write_kadid_labels, write_koniq_labels

# The 11 datasets whose label files are public (UWIQA's is not).
PUBLIC = ("live", "csiq", "tid2013", "kadid", "bid", "spaq", "livec", "koniq10k", "gfiqa_20k", "agiqa_3k",
          "aigciqa2023")


@pytest.fixture(scope="module")
def document():
    """The shipped file, read with gzip and json alone (as another codebase would)."""
    with gzip.open(PUBLISHED_FILE, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def _test_units(entry, seed):
    return {u for u, bit in zip(entry["units"], entry["test"][str(seed)]) if bit == "1"}


def test_the_file_is_plain_gzip_json_small_and_follows_its_rule(document):
    assert PUBLISHED_FILE.stat().st_size < 400_000          # shipped in the package: keep it small
    assert document["format"] == "promptiqa-published-splits" and document["version"] == 1
    assert document["seeds"] == list(SPLIT_SEEDS) == list(range(2024, 2034))
    assert tuple(document["datasets"]) == PUBLIC
    for key, entry in document["datasets"].items():
        spec = DATASET_SPECS[key]
        n = entry["n_units"]
        assert entry["split_by"] == spec.split_by and entry["n_images"] == spec.images  # the paper's counts
        assert n == len(entry["units"]) == len(set(entry["units"])) == (spec.references or spec.images)
        if spec.split_by == "reference":
            images = [name for unit in entry["units"] for name in entry["images"][unit]]
            assert len(images) == len(set(images)) == spec.images     # every image under exactly one reference
        for seed in SPLIT_SEEDS:
            mask = entry["test"][str(seed)]
            assert len(mask) == n and set(mask) <= {"0", "1"}
        # The rule as the file states it, written out here without the package: shuffle positions, cut at 80%.
        for seed in (2024, 2033):
            order = list(range(n))
            random.Random(seed).shuffle(order)
            cut = int(round(document["train_fraction"] * n))
            assert _test_units(entry, seed) == {entry["units"][i] for i in order[cut:]}, (key, seed)
    # the sizes of FORMATS.md's table at any seed: KonIQ 8058/2015, KADID 65/16 references
    assert document["datasets"]["koniq10k"]["test"]["2027"].count("1") == 2015
    assert document["datasets"]["kadid"]["test"]["2027"].count("1") == 16


def test_the_file_regenerates_identically_from_the_public_label_files(shared_dir, tmp_path, document):
    """The one test that needs ../shared: its label files, as the label-only roots its script builds."""
    script = shared_dir / "datasets" / "build_label_fixtures.py"
    roots = tmp_path / "roots"
    proc = subprocess.run([sys.executable, str(script), str(roots)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "published.json.gz"
    argv = ["--out", str(out), "--source", document["source"]]
    for key in PUBLIC:
        argv += ["--data_root", f"{key}={roots / key}"]
    assert publish_main(argv) == 0
    assert gzip.decompress(out.read_bytes()) == gzip.decompress(PUBLISHED_FILE.read_bytes())


def _label_only_root(key, entry, root):
    """A label-only root of a published dataset, from the file's own image names (a split needs no scores)."""
    if key == "kadid":
        names = [name.split("/")[-1] for unit in entry["units"] for name in entry["images"][unit]]
        write_kadid_labels(root, [(name, 3.0) for name in names])
    elif key == "koniq10k":
        write_koniq_labels(root, [(unit.split("/")[-1], 50.0) for unit in entry["units"]])
    return root


def _swap_one(split):
    """The split with its first train and first test unit exchanged."""
    train, test = list(split.train_units), list(split.test_units)
    train[0], test[0] = test[0], train[0]
    return dataclasses.replace(split, train_units=train, test_units=test)


def _check(capsys, *argv):
    status = cli_main(["check", *map(str, argv), "--json"])
    lines = capsys.readouterr().out.rstrip("\n").split("\n")
    return status, lines, json.loads(lines[-1])


def test_a_paper_seed_split_of_published_datasets_passes_and_a_perturbed_one_fails(document, tmp_path, capsys):
    datasets = {key: load_dataset(key, _label_only_root(key, document["datasets"][key], tmp_path / key),
                                  check_images=False) for key in ("kadid", "koniq10k")}
    splits = {key: make_split(ds, 2029) for key, ds in datasets.items()}
    save_splits(tmp_path / "paper.json", splits)
    status, lines, report = _check(capsys, "--splits", tmp_path / "paper.json")
    assert status == 0 and report["ok"] and report["compared"] == 2
    assert "kadid        seed 2029  equal (81 references, 10125 images)" in lines
    assert "koniq10k     seed 2029  equal (10073 images)" in lines

    # a --val_fraction run's split (a validation part carved out of the train side) is the same published split
    save_splits(tmp_path / "val.json", {key: carve_validation(datasets[key], split, 0.2) for key, split in splits.items()})
    assert all(e["val"] for e in json.loads((tmp_path / "val.json").read_text())["splits"].values())
    status, _, report = _check(capsys, "--splits", tmp_path / "val.json")
    assert status == 0 and report["ok"] and report["compared"] == 2

    save_splits(tmp_path / "perturbed.json", {key: _swap_one(split) for key, split in splits.items()})
    status, lines, report = _check(capsys, "--splits", tmp_path / "perturbed.json")
    assert status == 1 and not report["ok"] and lines[-2] == "FAILED: 2 of 2 published dataset(s) differ"
    by_key = {d["key"]: d for d in report["datasets"]}
    assert (by_key["kadid"]["other_side_units"], by_key["kadid"]["differing_images"]) == (2, 250)  # 125 per ref
    assert (by_key["koniq10k"]["other_side_units"], by_key["koniq10k"]["differing_images"]) == (2, 2)
    assert any(line.startswith("kadid        seed 2029  DIFFERS: 2 reference(s) (250 images) on the other side")
               for line in lines)

    # Another seed's split is not this seed's: recorded as 2030 but made with 2029, thousands of images differ.
    save_splits(tmp_path / "mislabelled.json", {"koniq10k": dataclasses.replace(splits["koniq10k"], seed=2030)})
    status, _, report = _check(capsys, "--splits", tmp_path / "mislabelled.json")
    assert status == 1 and report["datasets"][0]["differing_images"] > 1000


def test_a_split_without_a_paper_seed_is_matched_to_the_closest_seed(document):
    kadid = document["datasets"]["kadid"]
    test = _test_units(kadid, 2027)
    entry = {"seed": None, "split_by": "reference", "train": [u for u in kadid["units"] if u not in test],
             "test": sorted(test)}
    result = compare_split("kadid", entry, document)
    assert result.equal and result.compared_seed == 2027 and "equals the published seed 2027" in result.notes[0]
    result = compare_split("kadid", dict(entry, seed=570908), document)
    assert result.equal and "not one of the published seeds" in result.notes[0]
    # by-image units are matched by file name: SPAQ's TestImage/ layout names the images of img_resize/
    spaq = document["datasets"]["spaq"]
    test = _test_units(spaq, 2024)
    rename = lambda unit: "TestImage/" + unit.split("/")[-1]  # noqa: E731
    entry = {"seed": 2024, "split_by": "image", "train": [rename(u) for u in spaq["units"] if u not in test],
             "test": [rename(u) for u in test]}
    assert compare_split("spaq", entry, document).equal
    # a fixture dataset under a published key is not the published dataset
    entry = {"seed": 2024, "split_by": "image", "train": ["1024x768/a.jpg"], "test": ["1024x768/b.jpg"]}
    result = compare_split("koniq10k", entry, document)
    assert not result.equal and result.unknown == 2 and result.missing == 10073


def test_a_real_run_with_a_paper_seed_passes_from_its_folder_and_checkpoint(document, train_argv, tmp_path, capsys):
    """train.py on BID (its 586 published image names, tiny images) at seed 2031: the micro model, stopped
    (resumably) after one step, which is enough for the run's splits.json and the checkpoint's recorded splits."""
    bid = tmp_path / "bid"
    names = [unit.split("/")[-1] for unit in document["datasets"]["bid"]["units"]]
    write_bid_labels(bid, [(int(name[len("DatabaseImage"):-len(".JPG")]), 1 + i % 4) for i, name in enumerate(names)])
    for i, name in enumerate(names):
        write_image(bid / name, i, (16, 16))
    mine = write_csv(tmp_path / "mine" / "labels.csv", ["image", "score"],
                     [(f"{i}.png", i) for i in range(20)])
    for i in range(20):
        write_image(tmp_path / "mine" / f"{i}.png", 1000 + i, (16, 16))
    from promptiqa.config import resolve_config
    from promptiqa.engine.trainer import launch

    run = tmp_path / "run"
    launch(resolve_config(train_argv({"bid": bid, "mine": mine}, run, epochs=2, seed=2031, stop_after_steps=1)))
    status, lines, report = _check(capsys, "--splits", run)
    assert status == 0 and report["compared"] == 1, lines
    assert "bid          seed 2031  equal (586 images)" in lines
    assert any(line.startswith("mine") and "not published" in line for line in lines)
    status, lines, _ = _check(capsys, "--splits", run / "last.pth.tar")
    assert status == 0 and "bid          seed 2031  equal (586 images)" in lines


def test_check_refuses_what_records_no_splits(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "prompt_num": 10}, tmp_path / "official.pth.tar")
    for path, message in ((tmp_path / "official.pth.tar", "the checkpoint records no splits"),
                          (tmp_path, "the folder has no splits.json"),
                          (tmp_path / "missing.json", "not found")):
        assert cli_main(["check", "--splits", str(path)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --splits") and message in err[0]
    # the data layer alone reads run folders and split files; checkpoints need the command (models' reader)
    with pytest.raises(SplitError, match="a checkpoint's splits are read by `python -m promptiqa check --splits`"):
        check.recorded_splits(str(tmp_path / "official.pth.tar"))
    assert cli_main(["check", "--splits", str(tmp_path), "--dataset", "bid", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: give either --splits or --dataset and --root, not both\n"


def test_a_damaged_published_file_is_named(tmp_path):
    bad = tmp_path / "splits.json.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(Exception, match=r"splits\.json\.gz is not a readable published-splits file"):
        read_published(bad)
    bad.write_bytes(gzip.compress(b'{"format": "promptiqa-published-splits", "version": 1, "seeds": [1], '
                                  b'"datasets": {"bid": {"units": ["a", "b"], "test": {"1": "1"}}}}'))
    with pytest.raises(Exception, match=r"dataset 'bid' needs 'units'"):
        read_published(bad)
