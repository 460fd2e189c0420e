"""Faults and bad input on the input side (issue 19): outputs that are inputs, unwritable outputs, truncated and
undecodable images, label files that are not text, broken caches, checkpoints and prompts, non-finite numbers, and
the leakage guard's image identity. Each test asserts what a user sees: the file unchanged, one `error:` line
naming the path, the exit code."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from promptiqa.cli import main as cli_main
from tests.test_predict import _micro_checkpoint, _write_image

ROOT = Path(__file__).resolve().parents[1]


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _error_line(stderr: str) -> str:
    """The one `error:` line a refused command prints (and nothing that looks like a traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert lines and lines[-1].startswith("error: "), stderr
    return lines[-1]


@pytest.fixture(scope="module")
def scoring(tmp_path_factory):
    """A micro checkpoint, a prompt.csv over 5 prompt images and 3 query images, in one folder."""
    root = tmp_path_factory.mktemp("scoring")
    ckpt = _micro_checkpoint(root / "micro.pth.tar")
    prompt_images = [_write_image(root / "prompt" / f"p{i}.png", seed=100 + i) for i in range(5)]
    csv_path = root / "prompt" / "prompt.csv"
    csv_path.write_text("image,score\n" + "".join(f"{p.name},{s}\n" for s, p in enumerate(prompt_images, 1)))
    queries = [_write_image(root / "queries" / f"q{i}.jpg", seed=i) for i in range(3)]
    return dict(root=root, ckpt=ckpt, csv=csv_path, prompt_images=prompt_images, queries=queries)


def _score(scoring, capsys, *extra, ckpt=None, prompt=None, images=None):
    args = ["score", "--checkpoint", ckpt or scoring["ckpt"], "--prompt", prompt or scoring["csv"], "--quiet",
            "--device", "cpu", "--workers", "0", *extra, *(images or scoring["queries"])]
    rc = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------- item 1: an output is never an input


def _link(target: Path, link: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    return link


# case -> (options given, the input the message must name)
OUTPUT_IS_INPUT = {
    "--out an input image": (lambda s, t: ["--out", s["queries"][1]], lambda s: s["queries"][1]),
    "--out the prompt CSV through a symlink": (lambda s, t: ["--out", _link(s["csv"], t / "scores.csv")],
                                              lambda s: s["csv"]),
    "--out a prompt image through ..": (lambda s, t: ["--out", s["root"] / "queries" / ".." / "prompt" / "p2.png"],
                                        lambda s: s["prompt_images"][2]),
    "--out a hard link to the checkpoint": (lambda s, t: ["--out", _hardlink(s["ckpt"], t / "model.csv")],
                                            lambda s: s["ckpt"]),
    "--save_prompt the checkpoint": (lambda s, t: ["--save_prompt", s["ckpt"]], lambda s: s["ckpt"]),
    "--save_prompt the prompt CSV": (lambda s, t: ["--save_prompt", s["csv"]], lambda s: s["csv"]),
    "--save_prompt an input image": (lambda s, t: ["--save_prompt", s["queries"][0]], lambda s: s["queries"][0]),
}


def _hardlink(target: Path, link: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.link(target, link)
    return link


@pytest.mark.parametrize("case", list(OUTPUT_IS_INPUT))
def test_score_refuses_an_output_that_is_an_input(scoring, tmp_path, capsys, case):
    options, named = OUTPUT_IS_INPUT[case]
    extra = options(scoring, tmp_path)
    before = {p: _digest(p) for p in [scoring["ckpt"], scoring["csv"], *scoring["prompt_images"], *scoring["queries"]]}
    listing = sorted(os.listdir(scoring["root"]))
    rc, out, err = _score(scoring, capsys, *extra)
    line = _error_line(err)
    assert rc == 1 and out == ""
    assert str(extra[1]) in line and str(named(scoring)) in line and "refusing to overwrite an input" in line, line
    assert {p: _digest(p) for p in before} == before          # every input byte for byte
    assert sorted(os.listdir(scoring["root"])) == listing      # and nothing new beside them


def test_score_refuses_out_and_save_prompt_at_one_path(scoring, tmp_path, capsys):
    target = tmp_path / "both.pt"
    rc, _, err = _score(scoring, capsys, "--out", target, "--save_prompt", tmp_path / "." / "both.pt")
    assert rc == 1 and "are the same file" in _error_line(err) and not target.exists()


def test_predictor_save_prompt_refuses_its_own_checkpoint_and_prompt_images(scoring, tmp_path):
    from promptiqa import Predictor
    from promptiqa.fileio import OutputError

    before = _digest(scoring["ckpt"])
    p = Predictor.from_checkpoint(scoring["ckpt"], device="cpu")
    p.set_prompt(scoring["prompt_images"], [1, 2, 3, 4, 5])
    with pytest.raises(OutputError, match=f"is the checkpoint {scoring['ckpt']}"):
        p.save_prompt(_link(scoring["ckpt"], tmp_path / "link.pth.tar"))
    with pytest.raises(OutputError, match="is a prompt image"):
        p.save_prompt(scoring["prompt_images"][0])
    assert _digest(scoring["ckpt"]) == before
    assert p.save_prompt(tmp_path / "ok.pt").is_file()          # another path is fine


# ---------------------------------------------------------------- item 11: an impossible --out fails before scoring


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder no file can be created in: chmod 555, or for root (who ignores modes) /sys."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if not os.path.isdir("/sys") or os.access("/sys", os.W_OK) and _can_create("/sys"):
        pytest.skip("no read-only folder available to root here")
    return Path("/sys")


def _can_create(folder: str) -> bool:
    try:
        fd, probe = __import__("tempfile").mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


@pytest.mark.parametrize("where,expected", [
    ("folder", "is a folder"), ("under a file", "is a file, not a folder"), ("read-only", "cannot create files in")])
def test_unwritable_out_is_found_before_the_model_loads(scoring, tmp_path, capsys, where, expected):
    (tmp_path / "a_file.csv").write_text("keep\n")
    out = {"folder": tmp_path, "under a file": tmp_path / "a_file.csv" / "scores.csv",
           "read-only": _read_only_folder(tmp_path) / "scores.csv"}[where]
    # The checkpoint is a text file: had the model been loaded (or any image scored) first, that would be the error.
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    for option in ("--out", "--save_prompt"):
        rc, stdout, err = _score(scoring, capsys, option, out, ckpt=tmp_path / "notes.txt")
        line = _error_line(err)
        assert rc == 1 and stdout == "" and line.startswith(f"error: {option} {out}") and expected in line, line
    assert sorted(os.listdir(tmp_path)) == ["a_file.csv", "notes.txt"] and (tmp_path / "a_file.csv").read_text() == \
        "keep\n"


def test_out_in_a_new_folder_is_still_written(scoring, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "scores.csv"
    rc, _, _ = _score(scoring, capsys, "--out", out)
    assert rc == 0 and out.read_text().splitlines()[0] == "image,score" and len(out.read_text().splitlines()) == 4


# ---------------------------------------------------------------- item 9: inputs score as their files; no NaN scores


def test_16_bit_grayscale_png_scores_the_same_as_a_pil_image_and_as_a_path(scoring, tmp_path):
    import cv2
    import numpy as np
    from PIL import Image

    from promptiqa import Predictor
    from promptiqa.predict import load_rgb

    rng = np.random.default_rng(0)
    gray = cv2.GaussianBlur(rng.integers(0, 65536, (48, 40)).astype(np.uint16), (0, 0), 1.5)
    path = tmp_path / "gray16.png"
    assert cv2.imwrite(str(path), gray)
    with Image.open(path) as image:
        assert image.mode == "I;16"
        np.testing.assert_array_equal(load_rgb(image, 64), load_rgb(path, 64))   # the pixels the model sees
        p = Predictor.from_checkpoint(scoring["ckpt"], device="cpu")
        p.set_prompt(scoring["prompt_images"], [1, 2, 3, 4, 5])
        from_path, from_pil = p.score([path, image], workers=0)
    assert from_path == from_pil


def test_prompt_scores_beyond_a_float_are_refused(scoring, tmp_path, capsys):
    from promptiqa import Predictor
    from promptiqa.predict import PromptError

    p = Predictor.from_checkpoint(scoring["ckpt"], device="cpu")
    with pytest.raises(PromptError, match="spans more than a float can hold"):
        p.set_prompt(scoring["prompt_images"][:3], [-1e308, 0, 1e308])
    csv_path = tmp_path / "huge.csv"
    csv_path.write_text("image,score\n" + "".join(f"{img},{s}\n" for img, s in
                                                  zip(scoring["prompt_images"], ["1e308", "-1e308", "0"])))
    rc, out, err = _score(scoring, capsys, "--out", tmp_path / "scores.csv", prompt=csv_path)
    line = _error_line(err)
    assert rc == 1 and out == "" and str(csv_path) in line and "float" in line and not (tmp_path / "scores.csv").exists()


def test_non_finite_scores_are_refused_not_returned(scoring):
    import torch

    from promptiqa import Predictor
    from promptiqa.predict import PredictorError

    p = Predictor.from_checkpoint(scoring["ckpt"], device="cpu")
    p.set_prompt(scoring["prompt_images"], [1, 2, 3, 4, 5])
    last = [m for m in p.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # what an overflow inside the model would give
        last.bias.fill_(float("nan"))
    with pytest.raises(PredictorError, match=f"{scoring['queries'][0]}: the score is not finite"):
        p.score(scoring["queries"], workers=0)


def _edited_checkpoint(source: Path, target: Path, edit) -> Path:
    import torch

    obj = torch.load(source, map_location="cpu", weights_only=True)
    edit(obj)
    torch.save(obj, target)
    return target


def _nan_weight(obj):
    name = next(k for k, v in obj["state_dict"].items() if v.is_floating_point())
    obj["state_dict"][name].view(-1)[0] = float("nan")


def test_checkpoint_with_nan_weights_is_refused_at_load(scoring, tmp_path, capsys):
    from promptiqa.models import CheckpointError, load_model

    bad = _edited_checkpoint(scoring["ckpt"], tmp_path / "nan.pth.tar", _nan_weight)
    with pytest.raises(CheckpointError, match="non-finite weights"):
        load_model(bad, device="cpu")
    rc, out, err = _score(scoring, capsys, ckpt=bad)
    line = _error_line(err)
    assert rc == 1 and out == "" and str(bad) in line and "non-finite weights" in line


# ---------------------------------------------------------------- item 10: checkpoints and saved prompts


def _set_config(**fields):
    def edit(obj):
        obj["config"].update(fields)
    return edit


@pytest.mark.parametrize("fields,expected", [
    (dict(arch="promptiqa_v2"), "arch is 'promptiqa_v2'; expected one of promptiqa, promptiqa_wo_prompt"),
    (dict(backbone="no_such_vit"), "cannot build the model its config describes"),
    (dict(backbone=7), "backbone is 7; expected a timm model name"),
    (dict(image_size="64"), "image_size is '64'; expected a positive whole number"),
    (dict(backbone_kwargs=[4, 32]), "backbone_kwargs is [4, 32]"),
    (dict(splits=["koniq10k"]), "splits is 'list'"),
])
def test_checkpoint_config_of_the_wrong_shape_is_one_line(scoring, tmp_path, capsys, fields, expected):
    from promptiqa.models import CheckpointError, load_model

    bad = _edited_checkpoint(scoring["ckpt"], tmp_path / "edited.pth.tar", _set_config(**fields))
    with pytest.raises(CheckpointError, match=str(bad)) as info:
        load_model(bad, device="cpu")
    assert expected in str(info.value)
    rc, _, err = _score(scoring, capsys, ckpt=bad)
    assert rc == 1 and str(bad) in _error_line(err)


@pytest.mark.parametrize("edit,expected", [
    (lambda o: o.pop("model"), "its 'model' entry is missing"),
    (lambda o: o.pop("score_range"), "its 'score_range' entry is missing"),
    (lambda o: o.update(score_range=["low", "high"]), "not two numbers"),
    (lambda o: o["prompt"].fill_(float("inf")), "holds NaN or infinity"),
    (lambda o: o.update(score_range=[-1e308, 1e308]), "spans more than a float can hold"),
])
def test_hand_edited_saved_prompt_is_one_line(scoring, tmp_path, capsys, edit, expected):
    import torch

    saved = tmp_path / "req.pt"
    rc, _, _ = _score(scoring, capsys, "--save_prompt", saved)
    assert rc == 0
    obj = torch.load(saved, weights_only=True)
    edit(obj)
    torch.save(obj, saved)
    rc, out, err = _score(scoring, capsys, prompt=saved)
    line = _error_line(err)
    assert rc == 1 and out == "" and str(saved) in line and expected in line, line
