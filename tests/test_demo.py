"""The embedded demo: the synthetic-distortion generator (tiny sizes) and a shortened demo run end to end."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from promptiqa.data.registry import load_dataset
from promptiqa.demo import published
from promptiqa.demo.run import DEFAULT_CONFIG, Demo, DemoConfig, main
from promptiqa.demo.synthetic import (DISTORTIONS, MAX_CROPS_PER_PHOTO, REQUIREMENT_NAMES, SINGLE_ASPECTS,
                                      example_set, generate, read_images, reference_crops, requirement,
                                      requirement_labels, severity)

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble"]


def _read(path: Path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _generator(facts, req):
    """The generator's labels of requirement ``req`` (by image name) and its evaluation set, from images.csv."""
    values, members = requirement_labels(req, facts)
    return dict(zip([r["image"] for r in facts], values)), {r["image"] for r, m in zip(facts, members) if m}


def _cross(facts, pool, model, prompt_req, label_req, every_held_out_image=False):
    """SROCC of ``model``'s predictions under ``prompt_req``'s prompt against ``label_req``'s generator labels, on
    ``label_req``'s held-out evaluation set (or every held-out image), from results.json's predictions alone."""
    from scipy.stats import spearmanr

    labels, members = _generator(facts, label_req)
    pred = dict(zip(pool, model["requirements"][f"demo_{prompt_req}"]["pred_pool"]))
    on = [n for n in pool if every_held_out_image or n in members]
    return spearmanr([pred[n] for n in on], [labels[n] for n in on])[0]


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
    facts = _read(data / "images.csv")
    images = [r["image"] for r in facts]
    assert len(images) == 150 and all((data / name).is_file() for name in images)
    rows = {r: _read(data / f"{r}.csv") for r in REQUIREMENT_NAMES}
    for name in ("ssim", "dssim", "psnr"):          # the metric requirements list every image, in the same order
        assert [r["image"] for r in rows[name]] == images
    ssim = np.array([float(r["score"]) for r in rows["ssim"]])
    assert np.allclose(np.array([float(r["score"]) for r in rows["dssim"]]), 1 - ssim)
    kinds = np.array([r["distortion"] for r in rows["ssim"]])
    levels = np.array([int(r["level"]) for r in rows["ssim"]])
    psnr = np.array([float(r["score"]) for r in rows["psnr"]])
    for kind in DISTORTIONS:       # stronger levels are worse on average under both metrics
        for metric in (ssim, psnr):
            means = [metric[(kinds == kind) & (levels == lv)].mean() for lv in range(1, 6)]
            assert means[0] > means[-1], (kind, means)
    colour_loss = np.array([float(r["colour_loss"]) for r in facts])
    means = [colour_loss[(kinds == "saturation") & (levels == lv)].mean() for lv in range(1, 6)]
    assert all(a < b for a, b in zip(means, means[1:])), means      # desaturation loses colour level by level
    ds = load_dataset("demo_ssim", data / "ssim.csv")
    assert ds.split_by == "reference" and len(ds.units) == 6 and len(ds.records) == 150
    assert len(load_dataset("demo_blur", data / "blur.csv").units) == 6     # every reference: the splits agree


def test_aspect_requirements_penalise_only_their_aspect_with_one_score_distribution(tiny):
    """Only the aspect's images score below 1, ranked by severity; every single-aspect requirement has the same
    scores; the set holds as many other images, spread over the other distortions and levels."""
    data = tiny / "a"
    facts = {r["image"]: r for r in _read(data / "images.csv")}
    marginals = []
    for aspect in SINGLE_ASPECTS:
        rows = _read(data / f"{aspect}.csv")
        scores = np.array([float(r["score"]) for r in rows])
        mine = np.array([r["distortion"] == aspect for r in rows])
        assert mine.sum() == 30 and len(rows) == 60                    # 6 references x 5 levels, and as many others
        assert (scores[~mine] == 1.0).all() and (scores[mine] < 1.0).all()
        assert sorted(scores[mine]) == pytest.approx(np.arange(30) / 30)
        loss = np.array([severity(facts[r["image"]]) for r in rows])[mine]
        assert (np.diff(scores[mine][np.argsort(-loss, kind="stable")]) > 0).all()   # more severe, lower score
        others = [(r["distortion"], r["level"]) for r in rows if r["distortion"] != aspect]
        counts = [others.count((k, str(lv))) for k in DISTORTIONS if k != aspect for lv in range(1, 6)]
        assert max(counts) - min(counts) <= 1 and sum(counts) == 30
        dmos = np.array([float(r["score"]) for r in _read(data / f"{aspect}_dmos.csv")])
        assert np.allclose(dmos, 1 - scores)
        marginals.append(sorted(scores))
    assert all(m == marginals[0] for m in marginals)
    rows = _read(data / "blur_noise.csv")
    scores = np.array([float(r["score"]) for r in rows])
    both = np.array([r["distortion"] in ("blur", "noise") for r in rows])
    assert both.sum() == 60 and len(rows) == 120 and (scores[~both] == 1).all() and (scores[both] < 1).all()


def test_a_label_file_may_take_fewer_others(tmp_path):
    """others_per_reference sets how many images of other distortions a training label file takes per reference;
    the scores do not change, and the balanced set (what the demo evaluates on) stays available."""
    meta = generate(tmp_path, size=32, crops_per_photo=2, seed=3, photos=PHOTOS[:2], requirements=["ssim", "noise"],
                    others_per_reference=2, progress=False)
    assert meta["requirements"]["noise"]["images"] == 4 * (5 + 2)
    rows = _read(tmp_path / "noise.csv")
    assert all(sum(r["reference"] == ref and r["distortion"] != "noise" for r in rows) == 2
               for ref in meta["references"])
    facts = read_images(tmp_path)
    scores, balanced = requirement_labels("noise", facts)
    assert balanced.sum() == 40
    by_name = dict(zip([f["image"] for f in facts], scores))
    assert all(float(r["score"]) == by_name[r["image"]] for r in rows)


def test_interval_sampled_examples_show_the_penalised_aspect(tiny):
    """An aspect requirement's interval-sampled ISPP (what the web app bundles) holds its aspect's images spread over
    the severities and as many images of other distortions scored as clean."""
    for aspect in SINGLE_ASPECTS:
        pairs = example_set(tiny / "a", aspect, n=10)
        assert len(pairs) == 10 and all(Path(p).is_file() for p, _ in pairs)
        low = [Path(p).name for p, s in pairs if s < 1]
        assert len(low) == 5 and all(f"_{aspect}" in name for name in low)
        assert min(s for _, s in pairs) == 0.0
        assert example_set(tiny / "a", f"{aspect}_dmos", n=10) == [(p, 1 - s) for p, s in pairs]  # reversed
    with pytest.raises(ValueError, match="unknown requirement 'sharpness'"):
        example_set(tiny / "a", "sharpness")


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


def test_references_come_from_several_scales_and_more_crops_only_add_references():
    """Each photo gives up to MAX_CROPS_PER_PHOTO distinct references (its 2 x 2, 3 x 3 and 4 x 4 grids); asking for
    more crops keeps the earlier ones byte for byte, so a larger dataset extends a smaller one."""
    few = reference_crops(32, 5, seed=0, photos=PHOTOS[:2])
    many = reference_crops(32, MAX_CROPS_PER_PHOTO, seed=0, photos=PHOTOS[:2])
    assert MAX_CROPS_PER_PHOTO == 30 and len(many) == 60
    assert [n for n, _ in many[:5]] == [f"astronaut{k}" for k in range(1, 6)] and many[30][0] == "chelsea1"
    by_name = dict(many)
    assert all(np.array_equal(img, by_name[name]) for name, img in few)
    assert all(img.shape == (32, 32, 3) for _, img in many)
    assert len({img.tobytes() for _, img in many}) == 60
    with pytest.raises(ValueError, match="crops per photo must be 1 to 30"):
        reference_crops(32, 31, seed=0, photos=PHOTOS[:1])


def test_generator_refuses_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown requirement 'sharpness'"):
        generate(tmp_path, size=32, requirements=["sharpness"], progress=False)
    with pytest.raises(ValueError, match="unknown photo"):
        generate(tmp_path, size=32, photos=["lena"], progress=False)


def test_the_shipped_configs_are_valid():
    default = DemoConfig.from_yaml(DEFAULT_CONFIG)
    full = DemoConfig.from_yaml(DEFAULT_CONFIG, full=True)
    assert default.train["pretrained_backbone"] is False              # nothing is downloaded
    # --full trains longer: as many epochs over more references (or more epochs)
    length = {c.save_path: c.train["epochs"] * c.data["crops_per_photo"] for c in (default, full)}
    assert length[full.save_path] > length[default.save_path] and full.data["out"] != default.data["out"]
    assert set(default.mirror) <= set(default.requirements) and default.unseen_requirements
    assert sum(len(requirement(r).aspects) == 1 for r in default.train_requirements) >= 2   # the matrix's subject


def test_config_refusals(tmp_path, capsys):
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
    capsys.readouterr()
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 1         # one error line, exit 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: demo config not found: {tmp_path / 'missing.yaml'}"]


def test_shortened_demo_runs_end_to_end(tmp_path, capsys, monkeypatch):
    """Generation, both trainings, prompted evaluation, the prompt x labels matrix, the prompt effect, the targets,
    the plot and the scoring-CLI call."""
    config = {
        "data": {"out": str(tmp_path / "data"), "size": 32, "crops_per_photo": 1, "seed": 0, "photos": PHOTOS},
        "train_requirements": ["ssim", "dssim", "blur", "noise"], "unseen_requirements": ["blur_noise"],
        "mirror": ["ssim", "dssim"], "score_requirement": "noise", "score_images": 3, "baseline": True,
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
    assert "PromptIQA SROCC, prompt of one requirement (rows) against the labels of each (columns)" in out
    run = tmp_path / "run"
    for name in ("results.json", "results.md", "results.png", "prompt_noise.csv", "scores_noise.csv",
                 "promptiqa/last.pth.tar", "promptiqa_wo_prompt/last.pth.tar"):
        assert (run / name).is_file(), name
    results = json.loads((run / "results.json").read_text())
    prompted, baseline = results["models"]["promptiqa"], results["models"]["promptiqa_wo_prompt"]
    reqs = ["ssim", "dssim", "blur", "noise", "blur_noise"]
    assert set(prompted["requirements"]) == {f"demo_{r}" for r in reqs}
    assert results["n_test_images"] == 25                             # 1 of 5 references held out, 25 images
    pool = prompted["test_images"]
    noise = prompted["requirements"]["demo_noise"]
    assert len(noise["images"]) == 10                                 # its 5 noisy images and 5 others
    assert sum("_noise" in n for n in noise["images"]) == 5
    assert not prompted["requirements"]["demo_blur_noise"]["seen"] and prompted["requirements"]["demo_ssim"]["seen"]
    assert baseline["prompt_effect"] == pytest.approx(1.0)            # no prompt: identical predictions
    from scipy.stats import spearmanr

    # the prompt effect is the Spearman correlation of the two prompts' predictions on the same images
    a = prompted["requirements"]["demo_ssim"]["pred_pool"]
    b = prompted["requirements"]["demo_dssim"]["pred_pool"]
    assert prompted["prompt_effect"] == pytest.approx(spearmanr(a, b)[0])
    # matrix entry (prompt P, labels L): P's predictions on L's held-out set against L's labels there ...
    blur = prompted["requirements"]["demo_blur"]
    at = [pool.index(n) for n in blur["images"]]
    assert prompted["cross_srocc"]["demo_noise"]["demo_blur"] == pytest.approx(
        spearmanr(np.array(noise["pred_pool"])[at], blur["gt"])[0])
    assert prompted["cross_srocc"]["demo_noise"]["demo_noise"] == pytest.approx(noise["metrics"]["srocc"])
    # ... and over every held-out image, against the generator's labels of them
    facts = read_images(tmp_path / "data")
    labels = dict(zip([r["image"] for r in facts], requirement_labels("blur", facts)[0]))
    assert prompted["cross_srocc_pool"]["demo_noise"]["demo_blur"] == pytest.approx(
        spearmanr(noise["pred_pool"], [labels[n] for n in pool])[0])
    rows = list(baseline["cross_srocc"].values())                     # without a prompt every row is the same
    assert all(r == pytest.approx(rows[0], nan_ok=True) for r in rows)
    # the noise ISPP (g - 1 ISPs, interval-sampled from the train split): images of the noise set only, scored in the
    # generator's order of them (noisy images below clean ones), some of each
    noise_labels, noise_set = _generator(facts, "noise")
    isp = noise["prompt"]
    label, score = (np.array([noise_labels[p["image"]] for p in isp]), np.array([p["score"] for p in isp]))
    assert len(isp) == 10 and {p["image"] for p in isp} <= noise_set
    assert np.array_equal(np.sign(label[:, None] - label[None, :]), np.sign(score[:, None] - score[None, :]))
    assert 4 <= sum("_noise" in p["image"] for p in isp) <= 9
    # held-out images only: no test reference appears in the prompt
    test_refs = {Path(n).name.split("_")[0] for n in pool}
    assert not test_refs & {Path(p["image"]).name.split("_")[0] for p in isp}
    # the CLI scored held-out images of the noise set on the prompt's scale
    scored = results["scored"]
    assert len(scored) == 3 and all(s["image"] in noise["images"] for s in scored)
    assert all(-1e-6 <= s["predicted"] <= 1 + 1e-6 for s in scored)
    # each target's verdict, as printed and as saved, agrees with its figure recomputed here from the predictions and
    # the generator's labels, against the shipped thresholds
    thresholds = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())["targets"]
    own = {r: _cross(facts, pool, prompted, r, r) for r in ("blur", "noise")}           # the single-aspect ones
    effect = spearmanr(a, b)[0]
    expected = {f"prompt effect <= {thresholds['prompt_effect']:g}": (effect, effect <= thresholds["prompt_effect"])}
    for req, other in (("blur", "noise"), ("noise", "blur")):
        margin = own[req] - _cross(facts, pool, prompted, req, other)
        expected[f"SROCC >= {thresholds['own_srocc']:g} on {req} (its own prompt, its held-out set)"] = (
            own[req], own[req] >= thresholds["own_srocc"])
        expected[f"{req} prompt: own SROCC - best other single-aspect SROCC >= {thresholds['margin']:g}"] = (
            margin, margin >= thresholds["margin"])
    unseen = _cross(facts, pool, prompted, "blur_noise", "blur_noise")
    expected[f"SROCC >= {thresholds['unseen_srocc']:g} on blur_noise (unseen; its own prompt, its held-out set)"] = (
        unseen, unseen >= thresholds["unseen_srocc"])
    printed = {m["what"]: (m["verdict"] == "met", float(m["value"])) for m in re.finditer(
        r"^(?P<verdict>met|NOT met): (?P<what>.+) \(measured (?P<value>\S+)\)$", out, re.M)}
    assert set(printed) == set(expected) == {t["what"] for t in results["targets"]}
    for t in results["targets"]:
        value, met = expected[t["what"]]
        assert (t["met"], printed[t["what"]][0]) == (met, met), t["what"]
        assert t["value"] == pytest.approx(value) and printed[t["what"]][1] == pytest.approx(value, abs=6e-5)
    # every figure the shipped config publishes a range for is checked against it: the value printed is the figure
    # recomputed here, and its verdict is whether that value, at the published precision, lies in the range
    shipped = DemoConfig.from_yaml(DEFAULT_CONFIG).published["figures"]
    run_figures = {f"{m}/{f}" for m in results["models"] for r in reqs for f in (r, f"{r}/all", "prompt_effect")}
    compared = {name: bounds for name, bounds in shipped.items() if name in run_figures}
    assert {"promptiqa/noise", "promptiqa/blur_noise/all", "promptiqa/prompt_effect",
            "promptiqa_wo_prompt/prompt_effect"} <= set(compared)
    lines = {m["figure"]: (m["verdict"] == "inside", m["value"]) for m in re.finditer(
        r"^- (?P<verdict>inside|OUTSIDE): (?P<figure>\S+) (?P<value>\S+) \(published median", out, re.M)}
    assert set(lines) == set(compared) == {f["figure"] for f in results["published"]}
    inside = 0
    for name, (low, _, high) in compared.items():
        model, figure = name.split("/", 1)
        if figure == "prompt_effect":
            by_prompt = results["models"][model]["requirements"]
            value = spearmanr(by_prompt["demo_ssim"]["pred_pool"], by_prompt["demo_dssim"]["pred_pool"])[0]
        else:
            req, on_all = figure.split("/")[0], figure.endswith("/all")
            value = _cross(facts, pool, results["models"][model], req, req, every_held_out_image=on_all)
        verdict = bool(low <= round(value, 3) <= high)               # False for NaN, printed as "–"
        inside += verdict
        assert lines[name][0] == verdict, (name, value, low, high, lines[name])
        if np.isnan(value):
            assert lines[name][1] == "–", name
        else:
            assert float(lines[name][1]) == pytest.approx(value, abs=6e-5), name
    assert (f"Against the README's range over seeds 2024, 2025, 2026, 2027, 2028 "
            f"({DemoConfig.from_yaml(DEFAULT_CONFIG).published['machine']}); figures vary with the CPU: "
            f"{inside} of {len(compared)} inside") in out
    md = (run / "results.md").read_text()
    assert "SROCC" in md and "over all 25 held-out images" in md and "Against the README's range" in md
    assert "| noise |" in md and md.count("| prompt \\ labels |") == 2            # both matrices, row by row
    # determinism for a seed: the same config again (prompted model only) gives the same predictions and matrix.
    # Alone, it would train on every core; side by side each model had its share, and float sums depend on that.
    monkeypatch.setenv("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // 2)))
    path.write_text(yaml.safe_dump({**config, "save_path": str(tmp_path / "again")}))
    assert main(["--config", str(path), "--no_baseline"]) == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())["models"]
    assert set(again) == {"promptiqa"}
    assert again["promptiqa"]["cross_srocc"] == prompted["cross_srocc"]
    assert again["promptiqa"]["requirements"]["demo_ssim"]["pred_pool"] == a


def _summary(seed, srocc, effect, baseline=True):
    """A demo results.json reduced to what the published figures read."""
    def model(s, e):
        return {"prompt_effect": e, "requirements": {
            "demo_ssim": {"metrics": {"srocc": s}, "srocc_pool": s / 2},
            "demo_blur_noise": {"metrics": {"srocc": -s}, "srocc_pool": 0.25}}}
    models = {"promptiqa": model(srocc, effect)}
    if baseline:
        models["promptiqa_wo_prompt"] = model(0.01, 1.0)
    return {"config": {"train": {"seed": seed}}, "models": models}


def test_published_ranges_are_min_median_max_over_seeds_and_runs_are_checked_against_them():
    runs = [_summary(1, 0.50, -0.9), _summary(2, 0.70, -0.5), _summary(3, 0.6004, -0.99, baseline=False)]
    ranges = published.ranges(runs)
    assert ranges["promptiqa/ssim"] == [0.5, 0.6, 0.7]
    assert ranges["promptiqa/blur_noise"] == [-0.7, -0.6, -0.5]
    assert ranges["promptiqa/ssim/all"] == [0.25, 0.3, 0.35]
    assert ranges["promptiqa/prompt_effect"] == [-0.99, -0.9, -0.5]
    assert not any(k.startswith("promptiqa_wo_prompt/") for k in ranges)   # not in every run
    pub = {"seeds": [1, 2, 3], "figures": ranges}
    published.check(pub)
    # each published run falls inside at the printed precision; a run beyond the range is flagged
    for run in runs:
        assert all(a["inside"] for a in published.compare(run, pub))
    flagged = {a["figure"]: a["inside"] for a in published.compare(_summary(4, 0.7006, -0.2), pub)}
    assert flagged["promptiqa/ssim"] is False and flagged["promptiqa/prompt_effect"] is False
    assert flagged["promptiqa/ssim/all"] is True
    assert published.compare(runs[0], None) == []
    with pytest.raises(ValueError, match="published figure promptiqa/ssim: expected"):
        published.check({"seeds": [1], "figures": {"promptiqa/ssim": [0.7, 0.6, 0.5]}})


def test_published_command_prints_the_config_section_and_the_readme_table(tmp_path, capsys):
    folders = []
    for seed, s in ((2024, 0.5), (2025, 0.6), (2026, 0.7)):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        summary = _summary(seed, s, -0.9)
        summary["config"].update(train_requirements=["ssim"], unseen_requirements=["blur_noise"],
                                 mirror=["ssim", "dssim"])
        (folder / "results.json").write_text(json.dumps(summary))
        folders.append(str(folder))
    assert published.main(folders + ["--machine", "test machine"]) == 0
    out = capsys.readouterr().out
    section = yaml.safe_load(out.split("\n\n")[0])["published"]
    assert section["seeds"] == [2024, 2025, 2026] and section["machine"] == "test machine"
    assert section["figures"]["promptiqa/ssim"] == [0.5, 0.6, 0.7]
    assert "| `ssim` | 0.600 [0.500, 0.700] | 0.300 [0.250, 0.350] | 0.010 [0.010, 0.010] |" in out
    assert "| `blur_noise` (unseen) | \u22120.600 [\u22120.700, \u22120.500] |" in out
    assert published.main(folders[:1] + folders[:1]) == 1
    assert "the runs must differ in seed" in capsys.readouterr().err
    assert published.main([str(tmp_path / "none")]) == 1
    assert f"{tmp_path / 'none' / 'results.json'}: no results.json" in capsys.readouterr().err


def test_the_readme_publishes_the_shipped_ranges_and_the_seed_option_sets_the_training_seed(monkeypatch):
    cfg = DemoConfig.from_yaml(DEFAULT_CONFIG)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = published.readme_table(cfg.published, cfg.requirements, cfg.unseen_requirements, cfg.mirror)
    assert table in readme                                 # the README's table is the config's ranges
    assert len(cfg.published["seeds"]) >= 3
    assert DemoConfig.from_yaml(DEFAULT_CONFIG, full=True).published is None   # --full: none published
    seen = []
    monkeypatch.setattr(Demo, "run", lambda self: seen.append(self.cfg.train["seed"]))
    assert main(["--seed", "7"]) == 0 and main([]) == 0
    assert seen == [7, cfg.train["seed"]]
