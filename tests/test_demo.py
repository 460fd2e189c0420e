"""The embedded demo: the synthetic-distortion generator (tiny sizes) and a shortened demo run end to end."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from promptiqa.data.registry import load_dataset
from promptiqa.demo.run import DEFAULT_CONFIG, DemoConfig, main
from promptiqa.demo.synthetic import DISTORTIONS, REQUIREMENT_NAMES, generate

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble"]


def _read(path: Path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _digest(folder: Path) -> str:
    h = hashlib.sha1()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate(root / "a", size=32, crops_per_photo=2, seed=3, photos=PHOTOS[:3], progress=False)
    return root


def test_generator_writes_every_requirement_in_the_csv_kind(tiny):
    data = tiny / "a"
    meta = json.loads((data / "dataset.json").read_text())
    assert meta["images"] == 3 * 2 * len(DISTORTIONS) * 5 and len(meta["references"]) == 6
    rows = {r: _read(data / f"{r}.csv") for r in REQUIREMENT_NAMES}
    images = [r["image"] for r in rows["ssim"]]
    assert all([r["image"] for r in v] == images for v in rows.values())      # same images, same order
    assert all((data / name).is_file() for name in images)
    ssim = np.array([float(r["score"]) for r in rows["ssim"]])
    assert np.allclose(np.array([float(r["score"]) for r in rows["dssim"]]), 1 - ssim)
    kinds = np.array([r["distortion"] for r in rows["ssim"]])
    for single in ("noise", "blur"):
        scores = np.array([float(r["score"]) for r in rows[single]])
        assert (scores[kinds != single] == 1.0).all() and np.allclose(scores[kinds == single], ssim[kinds == single])
    levels = np.array([int(r["level"]) for r in rows["ssim"]])
    psnr = np.array([float(r["score"]) for r in rows["psnr"]])
    for kind in DISTORTIONS:       # stronger levels are worse on average under both metrics
        for metric in (ssim, psnr):
            means = [metric[(kinds == kind) & (levels == lv)].mean() for lv in range(1, 6)]
            assert means[0] > means[-1], (kind, means)
    ds = load_dataset("demo_ssim", data / "ssim.csv")
    assert ds.split_by == "reference" and len(ds.units) == 6 and len(ds.records) == 150


def test_generator_is_deterministic_and_seeded(tiny):
    generate(tiny / "b", size=32, crops_per_photo=2, seed=3, photos=PHOTOS[:3], progress=False)
    assert _digest(tiny / "a") == _digest(tiny / "b")
    generate(tiny / "c", size=32, crops_per_photo=2, seed=4, photos=PHOTOS[:3], progress=False)
    a, c = (tiny / "a" / "images"), (tiny / "c" / "images")
    assert (a / "astronaut1_noise3.png").read_bytes() != (c / "astronaut1_noise3.png").read_bytes()
    # the same settings again leave the folder untouched
    before = (tiny / "b" / "ssim.csv").stat().st_mtime_ns
    generate(tiny / "b", size=32, crops_per_photo=2, seed=3, photos=PHOTOS[:3], progress=False)
    assert (tiny / "b" / "ssim.csv").stat().st_mtime_ns == before


def test_generator_refuses_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown requirement 'sharpness'"):
        generate(tmp_path, size=32, requirements=["sharpness"], progress=False)
    with pytest.raises(ValueError, match="unknown photo"):
        generate(tmp_path, size=32, photos=["lena"], progress=False)


def test_the_shipped_configs_are_valid():
    default = DemoConfig.from_yaml(DEFAULT_CONFIG)
    full = DemoConfig.from_yaml(DEFAULT_CONFIG, full=True)
    assert default.train["pretrained_backbone"] is False              # nothing is downloaded
    assert full.train["epochs"] > default.train["epochs"]
    assert set(default.mirror) <= set(default.train_requirements) and default.unseen_requirements


def test_config_refusals(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"colour": 1}))
    with pytest.raises(ValueError, match="unknown demo settings"):
        DemoConfig.from_yaml(path)
    path.write_text(yaml.safe_dump({"mirror": ["ssim", "psnr2"]}))
    with pytest.raises(ValueError):
        DemoConfig.from_yaml(path)
    path.write_text(yaml.safe_dump({"train": {"learning_rate": 1}}))
    with pytest.raises(ValueError, match="unknown train.py settings"):
        DemoConfig.from_yaml(path)
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2


def test_shortened_demo_runs_end_to_end(tmp_path, capsys):
    """Generation, both trainings, prompted evaluation, the prompt effect, the plot and the scoring-CLI call."""
    config = {
        "data": {"out": str(tmp_path / "data"), "size": 32, "crops_per_photo": 1, "seed": 0, "photos": PHOTOS},
        "train_requirements": ["ssim", "dssim", "psnr", "noise"], "unseen_requirements": ["blur"],
        "mirror": ["ssim", "dssim"], "score_requirement": "ssim", "score_images": 3, "baseline": True,
        "save_path": str(tmp_path / "run"),
        "train": {"backbone": "vit_tiny_patch16_224", "image_size": 32, "pretrained_backbone": False,
                  "backbone_kwargs": {"depth": 4, "embed_dim": 32, "num_heads": 2, "patch_size": 8},
                  "batch_size": 22, "groups_per_process": 2, "batch_groups": True, "epochs": 1, "lr": 1e-4,
                  "random_flipping_rate": 0.5, "workers": 0, "device": "cpu", "log_every": 5},
    }
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "prompt effect (ssim vs dssim prompt)" in out and "no (unseen)" in out
    run = tmp_path / "run"
    for name in ("results.json", "results.md", "results.png", "prompt_ssim.csv", "scores_ssim.csv",
                 "promptiqa/last.pth.tar", "promptiqa_wo_prompt/last.pth.tar"):
        assert (run / name).is_file(), name
    results = json.loads((run / "results.json").read_text())
    prompted, baseline = results["models"]["promptiqa"], results["models"]["promptiqa_wo_prompt"]
    assert set(prompted["requirements"]) == {f"demo_{r}" for r in ["ssim", "dssim", "psnr", "noise", "blur"]}
    assert results["n_test_images"] == 25                             # 1 of 5 references held out, 25 images
    assert not prompted["requirements"]["demo_blur"]["seen"] and prompted["requirements"]["demo_ssim"]["seen"]
    assert baseline["prompt_effect"] == pytest.approx(1.0)            # no prompt: identical predictions
    assert -1.0 <= prompted["prompt_effect"] <= 1.0
    # the prompt effect is the Spearman correlation of the two prompts' predictions on the same images
    from scipy.stats import spearmanr

    a = prompted["requirements"]["demo_ssim"]["pred"]
    b = prompted["requirements"]["demo_dssim"]["pred"]
    assert prompted["prompt_effect"] == pytest.approx(spearmanr(a, b)[0])
    assert len(prompted["requirements"]["demo_ssim"]["prompt"]) == 10  # g - 1 ISPs, from the train split
    # held-out images only: no test reference appears in the prompt
    test_refs = {Path(n).name.split("_")[0] for n in prompted["test_images"]}
    assert not test_refs & {Path(p["image"]).name.split("_")[0] for p in prompted["requirements"]["demo_ssim"]["prompt"]}
    # the CLI scored held-out images on the SSIM scale given by the prompt's range
    scored = results["scored"]
    assert len(scored) == 3
    raw = [float(r["score"]) for r in _read(tmp_path / "data" / "ssim.csv")]
    assert all(min(raw) - 1e-6 <= s["predicted"] <= max(raw) + 1e-6 for s in scored)
    assert {t["what"] for t in results["targets"]} >= {"prompt effect <= -0.5", "SROCC >= 0.5 on ssim (its own prompt)"}
