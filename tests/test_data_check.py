"""The dataset check CLI: counts, ranges, problems, exit status and the --json last line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from promptiqa.cli import main as cli_main
from promptiqa.data.formats import common
from tests.fixtures.datasets import build_fixture, build_from_published, write_csv

REPO = Path(__file__).resolve().parents[1]


def run_check(capsys, *argv):
    """(exit status, all stdout lines, the parsed last line)."""
    status = cli_main(["check", *map(str, argv)])
    lines = capsys.readouterr().out.rstrip("\n").split("\n")
    return status, lines, json.loads(lines[-1])


@pytest.mark.parametrize("key, images, references, low, high", [
    ("koniq10k", 10073, 0, 3.91176470588, 88.3888888889),
    ("kadid", 10125, 81, 1.0, 4.93),
    ("tid2013", 3000, 25, 0.24242, 7.21429),
    ("csiq", 866, 30, 0.0, 1.0),
    ("bid", 586, 0, 0.1638057263157895, 4.919752378181818),
    ("agiqa_3k", 2982, 0, 0.0, 4.488740784),
])
def test_label_only_check_of_real_files(capsys, labels_dir, key, images, references, low, high):
    status, lines, report = run_check(capsys, "--dataset", key, "--root", labels_dir / key, "--no-images", "--json")
    assert status == 0 and report["ok"] and report["problems"] == []
    assert (report["dataset"], report["images"], report["references"]) == (key, images, references)
    assert (report["score_min"], report["score_max"]) == pytest.approx((low, high))
    assert report["images_checked"] is False
    assert f"images      {images}  (published: {images})" in lines


def test_label_only_check_of_live_names_references_from_refnames_all(capsys, labels_dir, tmp_path, monkeypatch):
    root = build_from_published("live", labels_dir, tmp_path / "live")
    # With --no-images nothing is listed: counts come from the label files alone.
    monkeypatch.setattr(common.os, "listdir", lambda path: pytest.fail(f"listed {path}"))
    status, lines, report = run_check(capsys, "--dataset", "live", "--root", root, "--no-images", "--json")
    assert status == 0 and (report["images"], report["references"]) == (779, 29)
    assert report["label_type"] == "DMOS" and report["higher_is_better"] is False
    assert report["score_max"] == pytest.approx(84.488972) and report["label_max"] == pytest.approx(0.83489, abs=1e-5)
    status, _, report = run_check(capsys, "--dataset", "live", "--root", root, "--no-images", "--json",
                                  "--label_norm", "minmax")
    assert status == 0 and report["score_max"] == pytest.approx(111.7747, abs=1e-4)


def test_complete_fixture_passes_and_a_subset_needs_partial(capsys, tmp_path):
    root = build_fixture("csiq", tmp_path)
    status, lines, report = run_check(capsys, "--dataset", "csiq", "--root", root, "--partial", "--json")
    assert status == 0 and report["images_checked"] and report["ok"]
    assert "OK: the dataset is complete" in lines
    status, lines, report = run_check(capsys, "--dataset", "csiq", "--root", root, "--json")
    assert status == 1
    assert report["problems"] == ["12 labelled images, the published dataset has 866 (use --partial for a subset)",
                                  "3 references, the published dataset has 30"]


def test_every_missing_or_corrupt_image_is_listed(capsys, tmp_path):
    root = build_fixture("koniq10k", tmp_path)
    images = sorted((root / "1024x768").iterdir())
    images[0].unlink()
    images[1].unlink()
    images[2].write_bytes(b"\xff\xd8 truncated")
    images[3].write_bytes(b"not an image")
    status, lines, report = run_check(capsys, "--dataset", "koniq10k", "--root", root, "--partial", "--json")
    assert status == 1 and not report["ok"]
    assert report["problems"] == [f"image not found: {images[0]}", f"image not found: {images[1]}",
                                  f"{common.TRUNCATED_JPEG}: {images[2]}", f"image cannot be decoded: {images[3]}"]
    assert sum(line.startswith("PROBLEM") for line in lines) == 4


def test_missing_image_folder_is_one_problem(capsys, tmp_path):
    root = build_fixture("livec", tmp_path)
    (root / "Images").rename(root / "images_elsewhere")
    status, _, report = run_check(capsys, "--dataset", "livec", "--root", root, "--partial", "--json")
    assert status == 1 and report["problems"] == [f"image folder not found: {root / 'Images'} "
                                                  "(12 labelled images are in it)"]


def test_label_file_problems_and_unknown_keys_fail_cleanly(capsys, tmp_path):
    status, _, report = run_check(capsys, "--dataset", "koniq", "--root", tmp_path, "--json")
    assert status == 1 and "unknown dataset key" in report["problems"][0] and "koniq10k" in report["problems"][0]
    status, _, report = run_check(capsys, "--dataset", "spaq", "--root", tmp_path / "absent", "--json")
    assert status == 1 and report["images"] is None and "dataset root not found" in report["problems"][0]
    root = build_fixture("gfiqa_20k", tmp_path / "gfiqa", images=False)
    write_csv(root / "mos.csv", ["img_name", "mos"], [["a.png", 40.0], ["b.png", 0.5]])
    status, _, report = run_check(capsys, "--dataset", "gfiqa_20k", "--root", root, "--no-images", "--partial",
                                  "--json")
    assert status == 1 and "1 of 2 labels fall outside [0, 1]" in report["problems"][0]


def test_csv_kind_with_lower_is_better(capsys, tmp_path):
    path = build_fixture("csv", tmp_path)
    status, lines, report = run_check(capsys, "--dataset", "my_photos", "--root", path, "--lower_is_better", "--json")
    assert status == 0 and report["label_type"] == "DMOS" and report["higher_is_better"] is False
    assert (report["images"], report["references"], report["label_min"], report["label_max"]) == (12, 3, 0.0, 1.0)
    assert lines[0] == "dataset     my_photos  (csv kind)"


def test_module_entry_point_ends_with_the_json_line(tmp_path):
    root = build_fixture("kadid", tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "promptiqa.data.check", "--dataset", "kadid", "--root", str(root), "--partial",
               "--json"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().split("\n")[-1])
    assert (report["dataset"], report["images"], report["references"]) == ("kadid", 12, 3)
    assert "decoding images" in done.stderr  # the progress bar goes to stderr, never after the JSON on stdout
