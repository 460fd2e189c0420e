"""README.md "Train on your own labels.csv": its commands, run as written on a labels.csv of generated images,
train the tiny config (configs/tiny.yaml), evaluate the checkpoint, write a prompt and score new images. The trained
checkpoint then shows test.py's outputs a script relies on: a folder of its own per run, workers from the cores,
strict JSON."""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
from pathlib import Path

import cv2
import numpy as np
import pytest

from promptiqa.cli import main
from promptiqa.config import load_yaml
from promptiqa.engine import run_folder
from promptiqa.fileio import save_figure
from promptiqa.resources import config_file

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "README.md"
SECTION = "### Train on your own labels.csv"


def recipe_commands():
    """The bash block of the guide's recipe section: its commands, as argument lists (comments dropped)."""
    text = PAGE.read_text(encoding="utf-8")
    section = text[text.index(SECTION):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.strip() and not line.startswith("#")]


def _photos(folder: Path, n: int, rng: np.random.Generator, labels: bool) -> None:
    """``n`` noisy gradients of random size; the label is the noise level (a labels.csv as the recipe lays it out)."""
    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        h, w = rng.integers(70, 120, size=2)
        base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
        level = float(rng.uniform(0, 60))
        img = np.clip(base + rng.normal(0, level, base.shape), 0, 255).astype(np.uint8)
        name = f"sub/{i:03d}.jpg" if labels else f"{i:03d}.png"
        (folder / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / name), img)
        rows.append([name, f"{5 - level / 15:.3f}"])
    if labels:
        with open(folder / "labels.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([["image", "score"], *rows])


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """The recipe's commands run in a fresh folder (training cut to one epoch): the folder."""
    folder = tmp_path_factory.mktemp("recipe")
    rng = np.random.default_rng(0)
    _photos(folder / "photos", 40, rng, labels=True)
    _photos(folder / "new_photos", 3, rng, labels=False)
    commands = recipe_commands()
    figures = {}

    def keep(fig, path, **kwargs):   # the figures the commands save, by file name
        figures[Path(path).name] = fig
        save_figure(fig, path, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setattr(run_folder, "save_figure", keep)
        # one epoch instead of the config's, to stay within seconds; every other setting is the tiny config's
        assert main([*commands[0][1:], "--epochs", "1"]) == 0
        for command in commands[1:]:
            assert main(command[1:]) == 0, command
    return folder, figures


def test_readme_recipe_trains_the_tiny_config_on_a_labels_csv(recipe):
    recipe, figures = recipe
    commands = recipe_commands()
    assert len(commands) <= 5 and [c[:2] for c in commands] == [
        ["promptiqa", "train"], ["promptiqa", "test"], ["promptiqa", "isp"], ["promptiqa", "score"]]
    train = commands[0]
    assert train[train.index("--config") + 1] == "tiny" and config_file("tiny").parent.name == "configs"
    run = recipe / "runs" / "mine"
    config = json.loads((run / "config.json").read_text())
    tiny = {k: v for k, v in load_yaml("tiny").items() if k not in ("epochs", "save_path")}
    assert config["config"] == "tiny" and {k: config[k] for k in tiny} == tiny   # the tiny config was the one used
    assert config["dataset"] == ["mine"] and (run / "best_model.pth.tar").is_file()
    # curves.png: its three epoch axes tick whole epochs only (one epoch here: matplotlib would tick 0.96 ... 1.04)
    ticks = [tick for ax in figures[run_folder.CURVES].axes for tick in ax.get_xticks()]
    assert ticks and all(float(t).is_integer() for t in ticks)

    with open(run / "test" / "results.csv", newline="") as fh:
        (result,) = list(csv.DictReader(fh))
    assert result["dataset"] == "mine" and int(result["n"]) == 8 and -1 <= float(result["srocc"]) <= 1
    prompt = list(csv.DictReader(open(run / "prompt.csv", newline="")))
    assert len(prompt) == 10 and all((run / p["image"]).is_file() for p in prompt)
    scored = list(csv.DictReader(open(run / "scores.csv", newline="")))
    assert sorted(Path(r["image"]).name for r in scored) == ["000.png", "001.png", "002.png"]
    low, high = min(float(p["score"]) for p in prompt), max(float(p["score"]) for p in prompt)
    assert all(low <= float(r["score"]) <= high for r in scored)   # on the prompt's scale


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_test_py_writes_a_folder_per_run_workers_from_the_cores_and_strict_json(recipe, tmp_path, monkeypatch,
                                                                                  capsys):
    """5 images: one test image, so every correlation is undefined; each run without --save_path gets its own
    folder; the worker count follows the cores as promptiqa score's does."""
    recipe, _ = recipe
    rng = np.random.default_rng(1)
    _photos(tmp_path / "few", 5, rng, labels=True)
    monkeypatch.chdir(tmp_path)
    argv = ["test", "--checkpoint", str(recipe / "runs" / "mine" / "best_model.pth.tar"), "--dataset", "few",
            "--data_root", "few=few/labels.csv", "--isp_num", "3", "--plot", "false", "--progress", "false"]
    folders = []
    for cores, workers in ((1, 0), (4, 2)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cores=cores: set(range(cores)), raising=False)
        assert main(argv) == 0
        (new,) = set((tmp_path / "runs" / "test").iterdir()) - set(folders)
        folders.append(new)
        results = _strict((new / "results.json").read_text())
        assert results["workers"] == workers
        metrics = results["datasets"]["few"]["metrics"]
        assert metrics["srocc"] is None and metrics["srocc_note"] == "undefined: only 1 point(s)"
        assert metrics["plcc"] is None and metrics["krcc_note"] == "undefined: only 1 point(s)"
        assert metrics["rmse"] >= 0
    assert folders[0] != folders[1] and f"wrote {folders[1].relative_to(tmp_path) / 'results.csv'}" in \
        capsys.readouterr().out


@pytest.mark.parametrize("label_name", ["predictions.csv", "results.csv"])
def test_test_py_never_replaces_a_label_file_in_its_save_path(recipe, tmp_path, monkeypatch, capsys, label_name):
    """test.py --save_path DIR overwrote a label file named predictions.csv or results.csv in DIR: refused before any
    work, in one line, the label file intact (issue 34, item 1)."""
    recipe, _ = recipe
    _photos(tmp_path / "lab", 6, np.random.default_rng(2), labels=True)
    label = tmp_path / "lab" / label_name
    (tmp_path / "lab" / "labels.csv").rename(label)
    before = label.read_bytes()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main(["test", "--checkpoint", str(recipe / "runs" / "mine" / "best_model.pth.tar"), "--dataset", "lab",
                 "--data_root", f"lab={label}", "--isp_num", "3", "--plot", "false", "--progress", "false",
                 "--save_path", str(tmp_path / "lab")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(lines) == 1 and f"is the label file of lab {label}" in lines[0], lines
    assert label.read_bytes() == before and not (tmp_path / "lab" / "results.json").exists()
