"""The Predictor API and the `python -m promptiqa score` command line, on a micro-preset checkpoint and tiny images."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from promptiqa import Predictor
from promptiqa.cli import main
from promptiqa.data.images import read_image, to_tensor
from promptiqa.models import build_model
from promptiqa.predict import (REQUIREMENT_CHECK_MIN_SROCC, ImageError, PredictorError, PromptError, ScoreScale,
                               find_images, read_prompt_pairs)
from tests.helpers import _micro_checkpoint, _write_image, check_prompts

ROOT = Path(__file__).resolve().parents[1]
STARS = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint, 5 prompt images with a prompt.csv (1-5 stars, paths relative to it), and 12 query images."""
    root = tmp_path_factory.mktemp("predict")
    ckpt = _micro_checkpoint(root / "micro.pth.tar")
    prompt_images = [_write_image(root / "prompt" / f"p{i}.png", seed=100 + i) for i in range(5)]
    (root / "prompt" / "prompt.csv").write_text(
        "image,score\n" + "".join(f"{p.name},{s}\n" for p, s in zip(prompt_images, STARS)))
    queries = [_write_image(root / "queries" / f"q{i:02d}.{'jpg' if i % 2 else 'png'}", seed=i) for i in range(12)]
    return dict(root=root, ckpt=ckpt, prompt_images=prompt_images, prompt_csv=root / "prompt" / "prompt.csv",
                queries=queries)


def _predictor(files, **prompt_kwargs) -> Predictor:
    p = Predictor.from_checkpoint(files["ckpt"], device="cpu")
    if prompt_kwargs:
        p.set_prompt(files["prompt_images"], **prompt_kwargs)
    return p


def _cli(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _rows(text: str):
    return list(csv.reader(text.splitlines()))


# --------------------------------------------------------------------------------------------------------------
# score scales


def test_score_scale_arithmetic_is_exact_both_ways():
    stars = ScoreScale(1, 5)
    np.testing.assert_array_equal(stars.to_model([1, 2, 3, 4.5, 5]), [0, 0.25, 0.5, 0.875, 1])
    np.testing.assert_array_equal(stars.to_user([0, 0.25, 0.5, 0.875, 1]), [1, 2, 3, 4.5, 5])
    dmos = ScoreScale(0, 100, higher_is_better=False)  # lower is better: the best DMOS maps to the model's 1
    np.testing.assert_array_equal(dmos.to_model([0, 25, 100]), [1, 0.75, 0])
    np.testing.assert_array_equal(dmos.to_user([1, 0.75, 0]), [0, 25, 100])
    values = np.random.default_rng(0).uniform(-3, 40, 50)
    for scale in (ScoreScale(-3, 40), ScoreScale(-3, 40, False)):
        np.testing.assert_allclose(scale.to_user(scale.to_model(values)), values, rtol=0, atol=1e-12)


def test_score_scale_from_scores():
    assert ScoreScale.from_scores([5, 3, 7]) == ScoreScale(3, 7, True)
    assert ScoreScale.from_scores([2, 4], (1, 5), higher_is_better=False) == ScoreScale(1, 5, False)
    with pytest.raises(PromptError, match="at least two distinct scores"):
        ScoreScale.from_scores([4, 4, 4])
    with pytest.raises(PromptError, match=r"score 7 lies outside score_range \(1, 5\)") as info:
        ScoreScale.from_scores([1, 7, 3], (1, 5))
    assert info.value.index == 1
    with pytest.raises(PromptError, match="low < high"):
        ScoreScale.from_scores([1, 2], (5, 1))


# --------------------------------------------------------------------------------------------------------------
# the API


def test_predictions_come_back_in_the_prompt_scale(files):
    """The same requirement in 0-1, 1-5 stars and a 0-100 DMOS: the model sees identical labels, so predictions
    are the 0-1 predictions mapped into each scale, exactly."""
    p = _predictor(files)
    p.set_prompt(files["prompt_images"], [0, 0.25, 0.5, 0.75, 1], name="unit", score_range=(0, 1))
    p.set_prompt(files["prompt_images"], STARS, name="stars", score_range=(1, 5))
    p.set_prompt(files["prompt_images"], [100, 75, 50, 25, 0], name="dmos", score_range=(0, 100),
                 higher_is_better=False)
    unit = p.score(files["queries"], workers=0, prompt="unit")
    assert unit.dtype == np.float64 and unit.shape == (12,) and np.all((unit > 0) & (unit < 1))
    assert np.ptp(unit) > 0  # the images are told apart, so the comparisons below mean something
    np.testing.assert_array_equal(p.score(files["queries"], workers=0, prompt="stars"), 1 + unit * 4)
    np.testing.assert_array_equal(p.score(files["queries"], workers=0, prompt="dmos"), 100 - unit * 100)


def test_without_score_range_the_prompt_min_and_max_define_the_scale(files):
    p = _predictor(files)
    prompt = p.set_prompt(files["prompt_images"], [10, 20, 30, 25, 15])
    assert prompt.scale == ScoreScale(10, 30, True) and prompt.isp_num == 5 and prompt.tensor.shape == (1, 5, 128)
    scores = p.score(files["queries"], workers=0)
    assert np.all((scores >= 10) & (scores <= 30))
    p.set_prompt(files["prompt_images"], [10, 20, 30, 25, 15], name="explicit", score_range=(10, 30))
    np.testing.assert_array_equal(scores, p.score(files["queries"], workers=0, prompt="explicit"))


def test_preprocessing_is_the_training_pipeline_for_paths_pil_images_and_arrays(files):
    p = _predictor(files, scores=[0, 0.25, 0.5, 0.75, 1], score_range=(0, 1))
    pngs = [q for q in files["queries"] if q.suffix == ".png"]
    by_path = p.score(pngs)
    # by hand: read_image -> to_tensor -> encode_prompt / score, as training feeds the model
    size = p.image_size
    batch = lambda paths: torch.stack([to_tensor(read_image(q, size)) for q in paths])  # noqa: E731
    with torch.no_grad():
        prompt = p.model.encode_prompt(batch(files["prompt_images"]), torch.tensor([0, 0.25, 0.5, 0.75, 1]))
        expected = p.model.score(batch(pngs), prompt).double().numpy()
    # same pixels and tensors; only kernel choice (thread count, inference mode) may move the last float bits
    np.testing.assert_allclose(by_path, expected, rtol=0, atol=1e-6)
    # PNG is lossless, so PIL and OpenCV decode the same pixels: all three inputs must score identically
    pil = [Image.open(q) for q in pngs]
    arrays = [cv2.cvtColor(cv2.imread(str(q)), cv2.COLOR_BGR2RGB) for q in pngs]
    np.testing.assert_array_equal(p.score(pil), by_path)
    np.testing.assert_array_equal(p.score(arrays), by_path)
    np.testing.assert_array_equal(p.score(np.stack(arrays)), by_path)          # an N x H x W x 3 array
    np.testing.assert_allclose(p.score(str(pngs[0])), by_path[:1], rtol=0, atol=1e-6)   # a single image


def test_bf16_autocast_stays_close_to_float32(files):
    float32 = _predictor(files, scores=STARS, score_range=(1, 5)).score(files["queries"][:4])
    p = Predictor.from_checkpoint(files["ckpt"], device="cpu", amp="bf16")
    p.set_prompt(files["prompt_images"], STARS, score_range=(1, 5))
    bf16 = p.score(files["queries"][:4])
    assert bf16.dtype == np.float64 and not np.array_equal(bf16, float32)  # autocast did run in bfloat16
    np.testing.assert_allclose(bf16, float32, atol=0.02)  # bfloat16 rounding, 0.5% of the 1-5 range
    with pytest.raises(PredictorError, match="amp: expected one of bf16, none, got 'fp8'"):   # devices.check_amp's
        Predictor.from_checkpoint(files["ckpt"], device="cpu", amp="fp8")
    none = Predictor.from_checkpoint(files["ckpt"], device="cpu", amp="none")   # as None: float32, one spelling
    none.set_prompt(files["prompt_images"], STARS, score_range=(1, 5))
    assert none.amp == "none" and "amp=none" in repr(none)
    np.testing.assert_array_equal(none.score(files["queries"][:4]), float32)


def test_decoding_workers_keep_the_order(files):
    p = _predictor(files, scores=STARS)
    np.testing.assert_array_equal(p.score(files["queries"], batch_size=3, workers=2),
                                  p.score(files["queries"], batch_size=3, workers=0))


def test_named_prompts(files):
    p = _predictor(files)
    p.set_prompt(files["prompt_images"], STARS)                                 # "default"
    p.set_prompt(files["prompt_images"], STARS[::-1], name="reversed")
    assert set(p.prompts) == {"default", "reversed"}
    default, reversed_ = p.score(files["queries"], workers=0), p.score(files["queries"], workers=0, prompt="reversed")
    np.testing.assert_array_equal(default, p.score(files["queries"], workers=0, prompt="default"))
    assert not np.array_equal(default, reversed_)
    with pytest.raises(PredictorError, match="no prompt named 'sharpness'.*'default', 'reversed'"):
        p.score(files["queries"], prompt="sharpness")


def test_saved_prompt_reloads_identically_and_other_models_refuse_it(files, tmp_path):
    p = _predictor(files, scores=STARS, score_range=(1, 5))
    expected = p.score(files["queries"], workers=0)
    path = p.save_prompt(tmp_path / "stars.pt")
    assert path.stat().st_size < 20_000  # the encoded prompt and its mapping, not the images
    fresh = Predictor.from_checkpoint(files["ckpt"], device="cpu")
    assert fresh.load_prompt(path) == "default" and fresh.load_prompt(path, name="stars") == "stars"
    assert fresh.prompts["stars"].scale == ScoreScale(1, 5, True)
    np.testing.assert_array_equal(fresh.score(files["queries"], workers=0, prompt="stars"), expected)

    other_weights = Predictor.from_checkpoint(_micro_checkpoint(tmp_path / "seed1.pth.tar", seed=1), device="cpu")
    with pytest.raises(PromptError, match="different model.*same config but other weights"):
        other_weights.load_prompt(path)
    other_config = Predictor.from_checkpoint(_micro_checkpoint(tmp_path / "s48.pth.tar", image_size=48), device="cpu")
    with pytest.raises(PromptError, match="different model.*'image_size': 64.*'image_size': 48"):
        other_config.load_prompt(path)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(PromptError, match="foreign.pt is not a PromptIQA prompt file"):
        fresh.load_prompt(tmp_path / "foreign.pt")


@pytest.mark.parametrize("images, scores, kwargs, error, match", [
    (1, [3], {}, PromptError, "at least 2 image-score pairs, got 1"),
    (3, [1, 2], {}, PromptError, "3 prompt images but 2 scores"),
    (2, [1, "abc"], {}, PromptError, "prompt pair 2: score 'abc' is not a number"),
    (2, [1, float("nan")], {}, PromptError, "not a finite number"),
    (3, [2, 2, 2], {}, PromptError, "at least two distinct scores"),
    (2, [1, 6], dict(score_range=(1, 5)), PromptError, "score 6 lies outside"),
])
def test_prompt_errors(files, images, scores, kwargs, error, match):
    p = _predictor(files)
    with pytest.raises(error, match=match):
        p.set_prompt(files["prompt_images"][:images], scores, **kwargs)
    assert p.prompts == {}


def test_image_errors(files, tmp_path):
    p = _predictor(files, scores=STARS)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="could not decode .*broken.jpg") as info:
        p.score([files["queries"][0], broken], workers=0)
    assert info.value.index == 1
    with pytest.raises(ImageError, match="not found: .*missing.png"):
        p.score([tmp_path / "missing.png"])
    with pytest.raises(ImageError, match="uint8 HxWx3 RGB"):
        p.score([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(TypeError, match="PIL images or uint8"):
        p.score(torch.zeros(1, 3, 64, 64))
    with pytest.raises(TypeError, match="needs a PromptIQA model"):
        Predictor(build_model("promptiqa_wo_prompt", preset="micro"))


def test_folder_scanning_is_recursive_case_insensitive_and_sorted(tmp_path):
    names = ["b.JPG", "a.png", "sub/z.jpeg", "sub/deeper/c.Tif", "sub/deeper/d.TIFF", "sub/e.bmp", "sub/f.webp",
             "a2/y.png"]
    for i, name in enumerate(names):
        _write_image(tmp_path / "photos" / name, seed=i)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    _write_image(tmp_path / "photos" / ".hidden.png", seed=9)
    _write_image(tmp_path / "photos" / ".thumbs" / "t.png", seed=9)
    single = _write_image(tmp_path / "single.png", seed=1).rename(tmp_path / "single.image")  # any suffix if named
    found = find_images([single, tmp_path / "photos"])
    rel = [p.relative_to(tmp_path).as_posix() for p in found]
    assert rel == ["single.image", "photos/a.png", "photos/b.JPG", "photos/a2/y.png", "photos/sub/e.bmp",
                   "photos/sub/f.webp", "photos/sub/z.jpeg", "photos/sub/deeper/c.Tif", "photos/sub/deeper/d.TIFF"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images under .*empty"):
        find_images([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="image or folder not found: .*nope"):
        find_images([tmp_path / "nope"])


# --------------------------------------------------------------------------------------------------------------
# scoring real folders: undecodable files, the API on folders, devices, decoding workers


def _messy_folder(root: Path) -> Path:
    """A folder as users have them: a good image, a .jpg that is not a JPEG, a text file."""
    folder = root / "messy"
    _write_image(folder / "good.png", seed=3)
    (folder / "junk.jpg").write_bytes(b"this is not a jpeg")
    (folder / "notes.txt").write_text("not an image, and not named like one")
    return folder


def test_folder_with_an_undecodable_image_is_scored_without_it(files, tmp_path, capsys):
    folder = _messy_folder(tmp_path)
    out = tmp_path / "scores.csv"
    base = ["score", "--checkpoint", files["ckpt"], "--prompt", files["prompt_csv"], "--workers", "0"]
    rc, stdout, stderr = _cli([*base, folder, "--out", out], capsys)
    good = _predictor(files, scores=STARS).score([folder / "good.png"])
    assert rc == 0 and _rows(out.read_text()) == [["image", "score"], [str(folder / "good.png"), f"{good[0]:.6f}"]]
    lines = stderr.splitlines()
    warning = [line for line in lines if line.startswith("warning: ")]
    assert len(warning) == 1 and "junk.jpg" in warning[0] and "cannot be decoded" in warning[0]
    assert "scored 1 images" in stderr and "skipped 1 file(s)" in stderr and f"  {folder / 'junk.jpg'}" in lines
    assert "notes.txt" not in stderr                          # files without an image suffix are not looked at

    out.write_text("previous results\n")
    for args in ([folder, "--strict"], [folder / "good.png", folder / "junk.jpg"]):  # --strict; named explicitly
        rc, stdout, stderr = _cli([*base, *args, "--out", out], capsys)
        assert rc == 1 and stdout == "" and stderr.splitlines()[-1].startswith("error: ")
        assert "junk.jpg" in stderr.splitlines()[-1] and out.read_text() == "previous results\n"
    only_junk = tmp_path / "only_junk"
    only_junk.mkdir()
    (only_junk / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    rc, _, stderr = _cli([*base, only_junk], capsys)
    assert rc == 1 and "none of the 1 images found could be decoded" in stderr.splitlines()[-1]


def test_score_walks_each_folder_once(files, tmp_path, capsys, monkeypatch):
    """The score command lists a folder once (find_images) and scores that listing: a big folder is not walked twice
    (it was: once to check the outputs against the inputs, once more in Predictor.score_files)."""
    folder = _messy_folder(tmp_path)
    walked, walk = [], os.walk
    monkeypatch.setattr(os, "walk", lambda top, *a, **k: walked.append(Path(top)) or walk(top, *a, **k))
    rc, stdout, _ = _cli(["score", "--checkpoint", files["ckpt"], "--prompt", files["prompt_csv"], "--workers", "0",
                          "--quiet", folder, files["queries"][0]], capsys)
    assert rc == 0 and walked == [folder]
    assert [row[0] for row in _rows(stdout)] == ["image", str(folder / "good.png"), str(files["queries"][0])]


def test_a_prompt_saved_before_the_one_weight_hash_still_loads_and_is_checked(files, tmp_path):
    """Saved prompts (format_version 1) record the model's weights_sha256. The one state-dict hash
    (models.state_dict_sha256; the trainer's rank check uses it too) is that same SHA-256, so a prompt file saved by
    earlier versions still loads, and still refuses a model with other weights."""
    import hashlib

    p = _predictor(files, scores=STARS, score_range=(1, 5))
    digest = hashlib.sha256()
    for name, tensor in p.model.state_dict().items():   # format 1's hash, as earlier versions computed it
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    entry = p.prompts["default"]
    earlier = dict(format="promptiqa-prompt", format_version=1, name="stars", prompt=entry.tensor.float().cpu(),
                   score_range=[1.0, 5.0], higher_is_better=True, images=entry.images, scores=entry.scores,
                   model=dict(config=dict(p.model.config), weights_sha256=digest.hexdigest()), version="0.1.0")
    torch.save(earlier, tmp_path / "earlier.pt")
    fresh = Predictor.from_checkpoint(files["ckpt"], device="cpu")
    assert fresh.load_prompt(tmp_path / "earlier.pt") == "stars"
    np.testing.assert_array_equal(fresh.score(files["queries"][:3], prompt="stars"), p.score(files["queries"][:3]))
    earlier["model"]["weights_sha256"] = "0" * 64
    torch.save(earlier, tmp_path / "other_weights.pt")
    with pytest.raises(PromptError, match=r"same config but other weights \(sha256 000000000000\.\.\."):
        fresh.load_prompt(tmp_path / "other_weights.pt")


def test_predictor_scores_folders(files, tmp_path):
    p = _predictor(files, scores=STARS)
    queries = sorted(files["queries"])
    assert np.array_equal(p.score(files["root"] / "queries", workers=0), p.score(queries, workers=0))
    assert np.array_equal(p.score([str(files["root"] / "queries"), queries[0]], workers=0),
                          p.score([*queries, queries[0]], workers=0))
    folder = _messy_folder(tmp_path)
    with pytest.raises(ImageError, match="could not decode .*junk.jpg"):  # score() returns one score per image
        p.score(folder, workers=0)
    with pytest.warns(UserWarning, match="skipped .*junk.jpg: it cannot be decoded"):
        result = p.score_files(folder, workers=0)
    assert result.images == [folder / "good.png"] and [path for path, _ in result.skipped] == [folder / "junk.jpg"]
    assert np.array_equal(result.scores["default"], p.score([folder / "good.png"]))


def test_several_prompts_in_one_call(files, tmp_path, capsys):
    saved = tmp_path / "saved.pt"  # a saved prompt keeps its own scale: 0-10, lower is better
    p = _predictor(files)
    p.set_prompt(files["prompt_images"], [9, 7, 5, 3, 1], score_range=(0, 10), higher_is_better=False)
    p.save_prompt(saved)
    dmos = tmp_path / "dmos.csv"
    dmos.write_text("image,score\n" + "".join(f"{q},{s}\n" for q, s in zip(files["prompt_images"], [80, 60, 50, 30, 5])))
    queries = files["queries"][:3]
    rc, stdout, _ = _cli(["score", "--checkpoint", files["ckpt"], "--prompt", files["prompt_csv"], "--prompt", saved,
                          "--prompt", dmos, "--score_range", 0, 100, "--lower_is_better", "--quiet", *queries], capsys)
    rows = _rows(stdout)
    assert rc == 0 and rows[0] == ["image", "prompt", "saved", "dmos"]   # one column per prompt, named by file stem
    api = _predictor(files)
    api.set_prompt(files["prompt_images"], STARS, name="stars", score_range=(0, 100), higher_is_better=False)
    api.load_prompt(saved, name="saved")
    api.set_prompt(files["prompt_images"], [80, 60, 50, 30, 5], name="dmos", score_range=(0, 100),
                   higher_is_better=False)
    expected = np.stack([api.score(queries, prompt=name) for name in ("stars", "saved", "dmos")], axis=1)
    assert rows[1:] == [[str(q), *(f"{v:.6f}" for v in row)] for q, row in zip(queries, expected)]
    assert all(0 <= v <= 10 for v in expected[:, 1])                      # the saved prompt's own 0-10 scale

    clash = tmp_path / "other" / "prompt.csv"                           # the same stem as files["prompt_csv"]
    clash.parent.mkdir()
    clash.write_text(files["prompt_csv"].read_text())
    for extra, message in ([["--prompt", clash], "clash"], [["--prompt", dmos, "--save_prompt", tmp_path / "x.pt"],
                                                              "--save_prompt saves one prompt"]):
        rc, _, stderr = _cli(["score", "--checkpoint", files["ckpt"], "--prompt", files["prompt_csv"], *extra,
                              *queries], capsys)
        assert rc == 1 and message in stderr.splitlines()[-1]


def _bad_devices():
    """(--device value, the one line every command refuses it with) for devices this machine lacks."""
    here = ", ".join(["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))] +
                     (["mps"] if torch.backends.mps.is_available() else []))
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    return [(missing, f"error: --device {missing}: not available on this machine; available here: {here}"),
            ("tpu", f"error: --device tpu: not a device torch knows; available here: {here}"),
            ("meta", f"error: --device meta: not available on this machine; available here: {here}")]


def test_every_command_refuses_a_missing_device_with_the_same_line(files, data, train_argv, tmp_path, capsys):
    """One device check (devices.resolve_device): score, the app, relabel, relabel-eval, train, test and benchmark
    refuse a device this machine does not have with the same line, before reading a checkpoint or an image."""
    labels = tmp_path / "relabelled"
    labels.mkdir()
    (labels / "tid2013_ssim.csv").write_text("image,score\n")
    commands = {
        "score": ["score", "--checkpoint", "absent.pth.tar", "--prompt", files["prompt_csv"], files["queries"][0]],
        "app": ["app", "--checkpoint", files["ckpt"]],
        "relabel": ["relabel", "--dataset", "tid2013", "--data_root", f"tid2013={tmp_path / 'absent'}",
                    "--out_dir", tmp_path / "out"],
        "relabel-eval": ["relabel-eval", "--checkpoint", files["ckpt"], "--labels_dir", labels,
                         "--save_path", tmp_path / "table3"],
        "train": ["train", *train_argv(data, tmp_path / "run")],
        "test": ["test", "--checkpoint", files["ckpt"], "--dataset", "koniq10k", "--data_root",
                 f"koniq10k={data['koniq10k']}", "--save_path", tmp_path / "eval"],
        "benchmark": ["benchmark", "--preset", "micro"],
    }
    for device, line in _bad_devices():
        said = {name: _cli([*argv, "--device", device], capsys) for name, argv in commands.items()}
        assert said == {name: (1, "", line + "\n") for name in commands}, device
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relabelled"]   # nothing written anywhere


@pytest.mark.parametrize("cores, workers", [(1, 0), (2, 0), (3, 1), (4, 2), (8, 4), (64, 4)])
def test_default_decoding_workers_follow_the_cores(monkeypatch, cores, workers):
    import promptiqa.predict as predict

    monkeypatch.setattr(predict.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert predict.default_workers() == workers


# --------------------------------------------------------------------------------------------------------------
# the command line


def test_cli_output_equals_the_api(files, tmp_path, capsys):
    out = tmp_path / "results" / "scores.csv"
    rc, stdout, stderr = _cli(["score", "--checkpoint", files["ckpt"], "--prompt", files["prompt_csv"],
                               "--score_range", 1, 5, files["root"] / "queries", "--out", out], capsys)
    assert rc == 0 and stdout == "" and "12/12" in stderr and "scored 12 images" in stderr  # progress, summary
    rows = _rows(out.read_text())
    expected = _predictor(files, scores=STARS, score_range=(1, 5)).score(files["queries"], workers=0, batch_size=8)
    assert rows[0] == ["image", "score"]
    assert rows[1:] == [[str(q), f"{v:.6f}"] for q, v in zip(sorted(files["queries"]), expected)]
    assert sorted(os.listdir(out.parent)) == ["scores.csv"]  # the temp file was renamed, nothing left beside it

    # no --out: the same table on standard output; --lower_is_better flips the derived 1-5 scale
    rc, stdout, _ = _cli(["score", "--checkpoint", files["ckpt"], "--prompt", files["prompt_csv"],
                          "--lower_is_better", "--quiet", *files["queries"][:3]], capsys)
    flipped = _predictor(files, scores=STARS, higher_is_better=False).score(files["queries"][:3])
    assert rc == 0 and _rows(stdout)[1:] == [[str(q), f"{v:.6f}"] for q, v in zip(files["queries"][:3], flipped)]


def test_cli_saved_prompt_round_trip(files, tmp_path, capsys):
    saved = tmp_path / "stars.pt"
    common = ["score", "--checkpoint", files["ckpt"], "--quiet", "--workers", "0", *files["queries"][:4]]
    rc, first, _ = _cli([*common, "--prompt", files["prompt_csv"], "--save_prompt", saved], capsys)
    assert rc == 0 and saved.is_file()
    rc, second, _ = _cli([*common, "--prompt", saved], capsys)
    assert rc == 0 and second == first
    rc, _, stderr = _cli([*common, "--prompt", saved, "--score_range", 0, 1], capsys)
    assert rc == 1 and "records its own score scale" in stderr


def test_cli_reads_the_official_json_prompt_format(files, tmp_path, capsys):
    # the official demo's example.json layout: a list of examples, image paths relative to the file
    pairs = [[f"./prompt/{p.name}", s] for p, s in zip(files["prompt_images"], [0.062, 0.206, 0.262, 0.375, 0.75])]
    examples = [{"Example_id": "Example1", "ISPP": pairs, "Image": ["./queries/q00.png", 0.05], "Remark": "DMOS"},
                {"Example_id": "Example2", "ISPP": [[p, 1 - s] for p, s in pairs], "Image": ["./queries/q00.png", 0.9],
                 "Remark": "reversed"}]
    path = files["root"] / "example.json"
    path.write_text(json.dumps(examples, indent=4))
    args = ["score", "--checkpoint", files["ckpt"], "--prompt", path, "--quiet", *files["queries"][:3]]
    rc, stdout, _ = _cli([*args, "--prompt_id", "Example2"], capsys)
    # official scores are on the model's [0, 1] scale, fed unchanged as the official demo does
    expected = _predictor(files, scores=[1 - s for _, s in pairs], score_range=(0, 1)).score(files["queries"][:3])
    assert rc == 0 and _rows(stdout)[1:] == [[str(q), f"{v:.6f}"] for q, v in zip(files["queries"][:3], expected)]
    rc, _, stderr = _cli(args, capsys)
    assert rc == 1 and "holds 2 prompts (Example1, Example2); choose one" in stderr
    bare = tmp_path / "pairs.json"  # a bare [[image, score], ...] list, with absolute paths
    bare.write_text(json.dumps([[str(files["root"] / p[2:]), s] for p, s in pairs]))
    assert read_prompt_pairs(bare).scores == [s for _, s in pairs]


def _bad_png(folder: Path, name: str) -> Path:
    """A file named like a PNG that no decoder can read."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder / name


def _prompt_csv(folder: Path, files, rows) -> Path:
    """A prompt.csv in `folder` from (image, score) rows; 'p0'..'p4' stand for the fixture's prompt images."""
    folder.mkdir(parents=True, exist_ok=True)
    lookup = {p.stem: str(p) for p in files["prompt_images"]}
    text = "image,score\n" + "".join(f"{lookup.get(str(image), image)},{score}\n" for image, score in rows)
    (folder / "prompt.csv").write_text(text)
    return folder / "prompt.csv"


def _text_file(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("hello")
    return folder / name


def _foreign_checkpoint(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, folder / name)
    return folder / name


# Each case: (folder, fixture files) -> the arguments that differ from a good run, and what the message must say.
CLI_ERRORS = {
    "one pair": (lambda d, f: dict(prompt=_prompt_csv(d, f, [("p0", 1)])),
                 ["prompt.csv", "at least 2 image-score pairs, got 1"]),
    "score not a number": (lambda d, f: dict(prompt=_prompt_csv(d, f, [("p0", 1), ("p1", "abc"), ("p2", 3)])),
                           ["prompt.csv row 3: score 'abc' is not a number"]),
    "prompt image missing": (lambda d, f: dict(prompt=_prompt_csv(d, f, [("p0", 1), ("p1", 2), ("gone.png", 3)])),
                             ["prompt.csv row 4: image 'gone.png' not found"]),
    "prompt image unreadable": (lambda d, f: dict(prompt=_prompt_csv(d, f, [("p0", 1), (_bad_png(d, "bad.png"), 2)])),
                                ["prompt.csv row 3: OpenCV could not decode", "bad.png"]),
    "equal scores": (lambda d, f: dict(prompt=_prompt_csv(d, f, [("p0", 2), ("p1", 2)])),
                     ["prompt.csv", "at least two distinct scores"]),
    "score outside range": (lambda d, f: dict(prompt=_prompt_csv(d, f, [("p0", 1), ("p1", 9)]),
                                              extra=["--score_range", "1", "5"]),
                            ["prompt.csv row 3: score 9 lies outside score_range (1, 5)"]),
    "score range reversed": (lambda d, f: dict(extra=["--score_range", "5", "1"]), ["score_range", "low < high"]),
    "prompt file missing": (lambda d, f: dict(prompt=d / "absent.csv"), ["prompt file not found", "absent.csv"]),
    "query image unreadable": (lambda d, f: dict(images=[*f["queries"][:9], _bad_png(d, "corrupt.png")],
                                                           workers="1"),  # reported from a decoding process
                               ["could not decode", "corrupt.png"]),
    "query path missing": (lambda d, f: dict(images=[d / "nowhere.jpg"]), ["image or folder not found", "nowhere.jpg"]),
    "checkpoint is text": (lambda d, f: dict(ckpt=_text_file(d, "notes.txt")),
                           ["notes.txt is not a readable PromptIQA checkpoint"]),
    "checkpoint of another model": (lambda d, f: dict(ckpt=_foreign_checkpoint(d, "resnet.pth"),  # small backbone:
                                                      extra=["--backbone", "vit_tiny_patch16_224"]),  # fast to build
                                    ["resnet.pth does not fit this PromptIQA", "--verbose for details"]),
    "checkpoint missing": (lambda d, f: dict(ckpt=d / "none.pth.tar"), ["checkpoint not found", "none.pth.tar"]),
}


@pytest.mark.parametrize("case", list(CLI_ERRORS))
def test_cli_user_errors_are_one_line_and_leave_no_output(files, tmp_path, capsys, case):
    build, expected = CLI_ERRORS[case]
    spec = build(tmp_path / "case", files)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "scores.csv").write_text("previous results\n")  # a failed run must not touch an existing output
    args = ["score", "--checkpoint", spec.get("ckpt", files["ckpt"]),
            "--prompt", spec.get("prompt", files["prompt_csv"]),
            *spec.get("extra", []), *spec.get("images", files["queries"][:2]), "--out", out_dir / "scores.csv",
            "--batch_size", "4", "--workers", spec.get("workers", "0")]
    rc, stdout, stderr = _cli(args, capsys)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == 1 and stdout == ""
    assert lines[-1].startswith("error: ") and "Traceback" not in stderr
    assert all(fragment in lines[-1] for fragment in expected), lines[-1]
    assert os.listdir(out_dir) == ["scores.csv"] and (out_dir / "scores.csv").read_text() == "previous results\n"


def test_cli_usage_errors_and_help(capsys):
    assert main(["score", "--help"]) == 0 and "--score_range LO HI" in capsys.readouterr().out
    assert main(["score", "x.jpg"]) == 2 and "--checkpoint" in capsys.readouterr().err  # argparse: required
    assert main(["no-such-command"]) == 2


def test_python_dash_m_entry_point(files, capsys):
    args = ["score", "--checkpoint", files["ckpt"], "--prompt", files["prompt_csv"], "--quiet", *files["queries"][:2]]
    proc = subprocess.run([sys.executable, "-m", "promptiqa", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rc, stdout, _ = _cli(args, capsys)
    assert rc == 0 and proc.stdout == stdout


def test_import_promptiqa_stays_light():
    code = ("import sys, promptiqa; print(promptiqa.__version__, 'torch' in sys.modules);"
            "from promptiqa.cli import build_parser; build_parser(); print('torch' in sys.modules);"
            "from promptiqa import Predictor; print(Predictor.__module__, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    import promptiqa

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [promptiqa.__version__, "False", "False", "promptiqa.predict", "True"]
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        promptiqa.Nope


def test_score_benchmark_compares_float32_and_bf16(tmp_path):
    """scripts/benchmark_score.py --amp both times both precisions on one model and reports what bf16 changes."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark_score.py"), "--preset", "micro", "-n",
                           "12", "--workers", "0", "--amp", "both"], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r.get("amp") for r in rows[:2]] == ["none", "bf16"] and all(r["images_per_s"] > 0 for r in rows[:2])
    diff = rows[2]
    # bf16 really ran (the scores moved) and moved them little; its SROCC against float32 is reported
    assert diff["images"] == 12 and 0 < diff["bf16_max_abs_diff"] < 0.5 and "bf16_srocc" in diff
    assert list(tmp_path.iterdir()) == []   # nothing written where it ran


def test_score_benchmark_reference_weights_are_the_official_models_only(tmp_path):
    """--weights reference (the fidelity tests' reference weights, from the package) is refused, before any work,
    where it cannot apply."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark_score.py"), "--weights", "reference",
                           "--preset", "micro"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "fills the official model only: use --preset official" in proc.stderr


# --------------------------------------------------------------------------------------------------------------
# the requirement check


def test_requirement_check_tells_a_followed_prompt_from_one_the_model_cannot_follow(files, tmp_path, capsys):
    ckpt = _micro_checkpoint(tmp_path / "seed3.pth.tar", seed=3)
    p = Predictor.from_checkpoint(ckpt, device="cpu")
    images, followed, reversed_ = check_prompts(p, tmp_path / "images")
    p.set_prompt(images, followed, name="followed", score_range=(1, 5))
    p.set_prompt(images, reversed_, name="reversed", score_range=(1, 5))
    good, bad = p.check_requirement("followed"), p.check_requirement("reversed")
    assert good.srocc >= REQUIREMENT_CHECK_MIN_SROCC and good.follows and "does not follow" not in good.line()
    assert bad.srocc < 0 and not bad.follows and bad.line().endswith("this model does not follow this requirement")
    # leave-one-out: image i's prediction is its score under a prompt of the other 9 pairs, as set_prompt makes it
    for i in (0, 7):
        others = [k for k in range(10) if k != i]
        p.set_prompt([images[k] for k in others], [followed[k] for k in others], name="rest", score_range=(1, 5))
        assert abs(good.predictions[i] - p.score([images[i]], prompt="rest", workers=0)[0]) <= 1e-5
    # a saved prompt keeps no image features: no check, said plainly
    p.save_prompt(tmp_path / "followed.pt", name="followed")
    p.load_prompt(tmp_path / "followed.pt", name="loaded")
    with pytest.raises(PredictorError, match="keeps no image features"):
        p.check_requirement("loaded")

    # `promptiqa score` says the same, one line per prompt on standard error (not with --quiet)
    prompts = []
    for name, scores in (("followed", followed), ("reversed", reversed_)):
        prompts.append(tmp_path / "images" / f"{name}.csv")
        prompts[-1].write_text("image,score\n" + "".join(f"{im.name},{v!r}\n" for im, v in zip(images, scores)))
    base = ["score", "--checkpoint", ckpt, "--score_range", "1", "5", "--workers", "0", files["queries"][0]]
    rc, _, stderr = _cli([*base, "--prompt", prompts[0], "--prompt", prompts[1]], capsys)
    checks = [line for line in stderr.splitlines() if "requirement check" in line]
    assert rc == 0 and checks == [f"{prompts[0]}: {good.line()}", f"{prompts[1]}: {bad.line()}"], stderr
    assert f"on the prompt's own 10 images): {good.srocc:.2f}" in checks[0]
    rc, _, stderr = _cli([*base, "--prompt", prompts[1], "--quiet"], capsys)
    assert rc == 0 and stderr == ""
    rc, _, stderr = _cli(["score", "--checkpoint", ckpt, "--prompt", tmp_path / "followed.pt", files["queries"][0]],
                         capsys)
    assert rc == 0 and "requirement check: not available for a saved prompt" in stderr
