"""The official sample order: which images form the ISPP when labels tie, in every place an ISPP is chosen; the
`python -m promptiqa isp` command; and the official code's own selections (../shared/reference)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from promptiqa import cli
from promptiqa.data import load_dataset, make_split, normalise_labels, official_train_order, sample_isps
from tests.fixtures.datasets import (write_csv, write_image, write_koniq_labels, write_spaq_labels,
                                     write_tid2013_labels)

ROOT = Path(__file__).resolve().parents[1]
# random.Random(2024).shuffle(list(range(10))) gives 6 0 9 8 3 5 1 4 | 2 7 (test_data_protocol checks it): with 10
# split units, these are the train units in the split's shuffle order.
TRAIN_UNITS = (6, 0, 9, 8, 3, 5, 1, 4)
# Image i's score: ties at 10 (images 1, 3), 30 (5, 9) and 50 (6, 8); images 2 and 7 are held out.
SCORES = (20, 10, 60, 10, 40, 30, 50, 5, 50, 30)


def _write(kind: str, root: Path, images: bool = False) -> Path:
    """A tied 10-unit dataset of ``kind``: SPAQ and KonIQ (10 images), TID2013 and csv (10 references x 2)."""
    if kind == "spaq":
        write_spaq_labels(root, [(f"s{i}.jpg", s) for i, s in enumerate(SCORES)])
        names = [f"img_resize/s{i}.jpg" for i in range(10)]
    elif kind == "koniq10k":
        write_koniq_labels(root, [(f"k{i}.jpg", s) for i, s in enumerate(SCORES)])
        names = [f"1024x768/k{i}.jpg" for i in range(10)]
    elif kind == "tid2013":
        # distortion-major, so label-file order interleaves the references; distortion 1 scores 3, distortion 2 5
        rows = [(3.0 if t == 1 else 5.0, f"i{r:02d}_{t:02d}_1.bmp") for t in (1, 2) for r in range(1, 11)]
        write_tid2013_labels(root, rows)
        names = [f"distorted_images/{name}" for _, name in rows]
    else:
        rows = [(f"img/r{r}_{t}.png", 0.3 if t == 1 else 0.5, f"r{r}") for t in (1, 2) for r in range(10)]
        root = write_csv(root / "labels.csv", ["image", "score", "reference"], rows)
        names = [image for image, _, _ in rows]
    if images:
        for i, name in enumerate(names):
            write_image((root.parent if kind == "csv" else root) / name, i)
    return root


# kind -> (the official train order by hand, ISPP size, the ISPP by hand)
EXPECTED = {
    # label-file order: the class walks the workbook and keeps the split's rows (ties: file order)
    "spaq": ([f"img_resize/s{i}.jpg" for i in (0, 1, 3, 4, 5, 6, 8, 9)], 5,
             # ranked 10: s1 s3, 20: s0, 30: s5 s9, 40: s4, 50: s6 s8; positions 0 2 4 6 7
             ["img_resize/s1.jpg", "img_resize/s0.jpg", "img_resize/s9.jpg", "img_resize/s6.jpg",
              "img_resize/s8.jpg"]),
    # shuffled-unit order: the class lists `for item in index` (ties: shuffle order)
    "koniq10k": ([f"1024x768/k{i}.jpg" for i in TRAIN_UNITS], 5,
                 # ranked 10: k3 k1, 20: k0, 30: k9 k5, 40: k4, 50: k6 k8; positions 0 2 4 6 7
                 ["1024x768/k3.jpg", "1024x768/k0.jpg", "1024x768/k5.jpg", "1024x768/k6.jpg", "1024x768/k8.jpg"]),
    # reference order (references I01..I10 sorted, then shuffled), label-file order within a reference
    "tid2013": ([f"distorted_images/i{r + 1:02d}_{t:02d}_1.bmp" for r in TRAIN_UNITS for t in (1, 2)], 4,
                # ranked: the eight 3s in reference order, then the eight 5s; positions 0 7 14 15
                ["distorted_images/i07_01_1.bmp", "distorted_images/i05_01_1.bmp", "distorted_images/i02_02_1.bmp",
                 "distorted_images/i05_02_1.bmp"]),
    # ours only: the split's unit order, then label-file order within a unit
    "csv": ([f"img/r{r}_{t}.png" for r in TRAIN_UNITS for t in (1, 2)], 4,
            ["img/r6_1.png", "img/r4_1.png", "img/r1_2.png", "img/r4_2.png"]),
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_the_official_sample_order_and_its_ties(kind, tmp_path):
    key = "mine" if kind == "csv" else kind
    ds = load_dataset(key, _write(kind, tmp_path / kind), check_images=False)
    split = make_split(ds, 2024)
    order, n, ispp = EXPECTED[kind]
    names = [ds.records[i].name for i in split.train_indices]
    assert [names[p] for p in official_train_order(ds, split)] == order
    labels = normalise_labels(ds, split.train_indices)
    picks = sample_isps(labels, n, order=official_train_order(ds, split))
    assert [names[p] for p in picks] == ispp
    # the order used before picks other images among the ties: record order for the shuffled kinds, the shuffled
    # unit order for SPAQ (which we used to treat as shuffled)
    before = [split.train_indices.index(u) for u in TRAIN_UNITS] if kind == "spaq" else None
    assert [names[p] for p in sample_isps(labels, n, order=before)] != ispp
    # random sampling shuffles the official order too, so it is a function of that order and the seed alone
    drawn = sample_isps(labels, n, "random", seed=3, order=official_train_order(ds, split))
    assert len(set(drawn.tolist())) == n


def _isp(argv, capsys):
    """Run `python -m promptiqa isp` in this process: (exit code, stdout, stderr)."""
    code = cli.main(["isp", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_isp_command_json_on_tied_labels(tmp_path, capsys):
    root = _write("koniq10k", tmp_path / "koniq")
    code, out, err = _isp(["--dataset", "koniq10k", "--root", str(root), "--no-images", "--isp_num", "5",
                           "--json"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert "koniq10k: 5 ISPs from the train split (8 images, split seed 2024)" in lines[0]
    payload = json.loads(lines[-1])
    assert list(payload) == ["dataset", "seed", "isp_num", "strategy", "isps"]
    assert (payload["dataset"], payload["seed"], payload["isp_num"], payload["strategy"]) == \
           ("koniq10k", 2024, 5, "interval")
    assert [isp["image"] for isp in payload["isps"]] == EXPECTED["koniq10k"][2]
    assert [isp["score"] for isp in payload["isps"]] == [10, 20, 30, 50, 50]
    assert [isp["label"] for isp in payload["isps"]] == [float(np.float32(s / 100)) for s in (10, 20, 30, 50, 50)]
    # the human table names the ties: images 3 and 6 share their label with one other train image each
    assert [line.split()[-1] for line in lines[2:7]] == ["1", "0.200000", "1", "1", "1"]


def test_isp_command_defaults_seeds_and_a_prompt_csv_the_score_command_reads(tmp_path, capsys):
    from promptiqa.predict import ScoreScale, read_prompt_pairs

    root = _write("tid2013", tmp_path / "tid", images=True)
    code, out, _ = _isp(["--dataset", "tid2013", "--root", str(root), "--no-images", "--json"], capsys)
    assert code == 0
    payload = json.loads(out.strip().splitlines()[-1])
    assert (payload["seed"], payload["isp_num"]) == (2024, 10)   # the defaults
    train = [f"distorted_images/i{r + 1:02d}_{t:02d}_1.bmp" for r in TRAIN_UNITS for t in (1, 2)]
    # 16 images, n 10: step 1, positions 0..8 then 15 (the official interval rule)
    assert [isp["image"] for isp in payload["isps"]] == train[0:16:2] + [train[1], train[15]]
    code, out, _ = _isp(["--dataset", "tid2013", "--root", str(root), "--no-images", "--seed", "2025", "--json",
                         "--isp_strategy", "random", "--isp_seed", "4", "--isp_num", "3"], capsys)
    payload = json.loads(out.strip().splitlines()[-1])
    assert (payload["seed"], payload["isp_num"], payload["strategy"]) == (2025, 3, "random")
    ds = load_dataset("tid2013", root, check_images=False)
    split = make_split(ds, 2025)
    labels = normalise_labels(ds, split.train_indices)
    picks = sample_isps(labels, 3, "random", seed=4, order=official_train_order(ds, split))
    assert [isp["image"] for isp in payload["isps"]] == [ds.records[split.train_indices[p]].name for p in picks]

    # --out: a prompt CSV (paths relative to it, raw scores) and the --score_range that gives the model's labels
    out_csv = tmp_path / "prompts" / "tid.csv"
    code, out, _ = _isp(["--dataset", "tid2013", "--root", str(root), "--no-images", "--isp_num", "4", "--out",
                         str(out_csv), "--json"], capsys)
    assert code == 0
    payload = json.loads(out.strip().splitlines()[-1])
    command = next(line for line in out.splitlines() if "python -m promptiqa score" in line)
    assert "--lower_is_better" not in command
    low, high = map(float, command.split("--score_range ")[1].split()[:2])
    assert (low, high) == (0.0, 9.0)   # TID2013's official mapping: score / 9
    pairs = read_prompt_pairs(out_csv)
    assert [Path(p).resolve() for p in pairs.images] == [(root / isp["image"]).resolve() for isp in payload["isps"]]
    with open(out_csv, newline="") as fh:
        assert not any(os.path.isabs(row["image"]) for row in csv.DictReader(fh))
    model_labels = np.float32(ScoreScale.from_scores(pairs.scores, (low, high)).to_model(pairs.scores))
    assert model_labels.tolist() == [isp["label"] for isp in payload["isps"]]


@pytest.mark.parametrize("kind, norm", [("csv", "official"), ("koniq10k", "minmax")])
def test_isp_score_range_maps_the_raw_scores_exactly_to_the_labels(kind, norm, tmp_path, capsys):
    from promptiqa.predict import ScoreScale, read_prompt_pairs

    root = _write(kind, tmp_path / kind, images=True)
    out_csv = tmp_path / "prompt.csv"
    code, out, err = _isp(["--dataset", "mine" if kind == "csv" else kind, "--root", str(root), "--no-images",
                           "--label_norm", norm, "--isp_num", "4", "--out", str(out_csv), "--json"], capsys)
    assert code == 0, err
    payload = json.loads(out.strip().splitlines()[-1])
    command = next(line for line in out.splitlines() if "--score_range" in line)
    low, high = map(float, command.split("--score_range ")[1].split()[:2])
    pairs = read_prompt_pairs(out_csv)
    labels = np.float32(ScoreScale.from_scores(pairs.scores, (low, high)).to_model(pairs.scores))
    assert labels.tolist() == [isp["label"] for isp in payload["isps"]]


def test_isp_command_is_light_and_reports_errors_in_one_line(tmp_path):
    root = _write("spaq", tmp_path / "spaq")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = ("import sys; from promptiqa.cli import main; rc = main(sys.argv[1:]); "
            "print('torch loaded' if 'torch' in sys.modules else 'no torch'); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "isp", "--dataset", "spaq", "--root", str(root),
                           "--no-images", "--json", "--isp_num", "5"], capture_output=True, text=True, timeout=60,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "no torch"   # label files only: no torch, seconds
    assert [isp["image"] for isp in json.loads(proc.stdout.strip().splitlines()[-2])["isps"]] == EXPECTED["spaq"][2]
    proc = subprocess.run([sys.executable, "-c", code, "isp", "--dataset", "spaq", "--root", str(root),
                           "--isp_num", "5"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1 and proc.stdout.strip() == "no torch"   # images are required without --no-images
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: [spaq] 1 image problem(s): image folder not found")
    for argv, message in ((["--isp_num", "9"], "error: spaq: --isp_num 9: cannot sample 9 prompt images from a train "
                                                 "split of only 8 images"),
                          (["--split_file", str(tmp_path / "none.json")], "error: split file not found")):
        proc = subprocess.run([sys.executable, "-m", "promptiqa", "isp", "--dataset", "spaq", "--root", str(root),
                               "--no-images", *argv], capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 1 and proc.stderr.startswith(message)
        assert len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "promptiqa", "isp", "--dataset", "spaq", "--root", str(root),
                           "--seed", "1", "--split_file", "x.json"], capture_output=True, text=True, timeout=60,
                          env=env)
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr


def test_training_and_test_py_choose_the_ispp_the_isp_command_shows(tmp_path, capsys):
    import torch

    from promptiqa.config import resolve_config
    from promptiqa.distributed import DistEnv
    from promptiqa.engine.trainer import Trainer
    from promptiqa.evaluation.runner import EvalConfig, EvalSession
    from promptiqa.models import PRESETS, build_model, checkpoint_config, save_checkpoint

    root = _write("koniq10k", tmp_path / "koniq", images=True)
    code, out, _ = _isp(["--dataset", "koniq10k", "--root", str(root), "--isp_num", "5", "--json"], capsys)
    assert code == 0
    shown = [isp["image"] for isp in json.loads(out.strip().splitlines()[-1])["isps"]]
    assert shown == EXPECTED["koniq10k"][2]

    micro = PRESETS["micro"]
    # training's evaluation: g = 6, so the prompt holds 5 ISPs
    cfg = resolve_config(["--dataset", "koniq10k", "--data_root", f"koniq10k={root}", "--batch_size", "6",
                          "--image_size", str(micro["image_size"]), "--save_path", str(tmp_path / "run")])
    (tmp_path / "run").mkdir()
    trainer = Trainer(cfg, DistEnv())
    views = trainer.build_data()[0]
    assert [views.train_names[p] for p in trainer.isp_positions["koniq10k"]] == shown

    # test.py (and the ISP experiments, Table 3 relabelling and the demo, which all ask EvalSession.prompt)
    torch.manual_seed(0)
    model = build_model("promptiqa", preset="micro")
    checkpoint = save_checkpoint(tmp_path / "model.pth.tar", model, config=checkpoint_config(
        model, prompt_num=5, label_norm="official", splits={}, datasets=[]))
    session = EvalSession(EvalConfig(checkpoint=str(checkpoint), dataset=["koniq10k"], device="cpu", workers=0,
                                     data_root=[f"koniq10k={root}"], progress=False))
    try:
        data = session.datasets[0]
        prompt = session.prompt(data)
        assert [data.train_names[p] for p in prompt.positions] == shown
        assert prompt.scores.tolist() == [float(np.float32(s / 100)) for s in (10, 20, 30, 50, 50)]
    finally:
        session.close()


# ------------------------------------------------------------------ the official code's selections


@pytest.fixture(scope="session")
def label_roots(shared_dir, tmp_path_factory):
    """The label-only roots of ../shared/datasets/build_label_fixtures.py (the layout the official code reads)."""
    script = shared_dir / "datasets" / "build_label_fixtures.py"
    if not script.is_file():
        pytest.skip(f"{script} is not present")
    out = tmp_path_factory.mktemp("label_roots")
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"build_label_fixtures.py failed: {proc.stderr.strip().splitlines()[-1:]}")
    return out


def test_isp_command_gives_the_official_codes_selections(shared_dir, label_roots, capsys):
    reference = shared_dir / "reference" / "official_isp_seed2024_n10.json"
    if not reference.is_file():
        pytest.skip(f"{reference} is not present")
    cases = json.loads(reference.read_text())["cases"]
    assert len(cases) == 11
    for case in cases:
        key = case["dataset"]
        code, out, err = _isp(["--dataset", key, "--root", str(label_roots / key), "--no-images", "--json",
                               "--seed", str(case["seed"]), "--isp_num", str(case["n"])], capsys)
        assert code == 0, err
        got = json.loads(out.strip().splitlines()[-1])["isps"]
        assert [isp["image"] for isp in got] == [isp["image"] for isp in case["isps"]], key   # same images, order
        assert [isp["score"] for isp in got] == [isp["score"] for isp in case["isps"]], key
        # The official code computes labels in float32 arithmetic, we in float64 rounded once: 1 ulp apart at most.
        np.testing.assert_allclose([isp["label"] for isp in got], [isp["label"] for isp in case["isps"]],
                                   rtol=0, atol=6e-8, err_msg=key)


def test_our_labels_tie_exactly_where_the_official_float32_labels_tie(label_roots):
    """So stable sorting by our labels ranks every train split as the official code does, at any seed and size."""
    for key in ("live", "csiq", "tid2013", "kadid", "bid", "spaq", "livec", "koniq10k", "gfiqa_20k", "agiqa_3k",
                "aigciqa2023"):
        ds = load_dataset(key, label_roots / key, check_images=False)
        ours = normalise_labels(ds)
        scores = np.array([r.score for r in ds.records], dtype=np.float32)   # the official classes' float32 cast
        shifted = scores - np.float32(ds.official_offset) if ds.official_offset else scores
        official = (shifted / np.float32(ds.official_divisor)).astype(np.float32)
        ranked = np.argsort([r.score for r in ds.records], kind="stable")
        assert np.array_equal(ours[ranked][1:] == ours[ranked][:-1], official[ranked][1:] == official[ranked][:-1]), \
            key
