"""Shared test fixtures: the ../shared folder beside the checkout, deterministic torch settings, the fixture datasets,
command lines of tiny training runs, and the web app's files and server (tests/helpers.py: the plain functions
behind them, which test files import; no test file imports another)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PROMPTIQA_SHARED", ROOT.parent / "shared"))

torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (read-only project material); tests needing it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present")
    return SHARED


@pytest.fixture(scope="session")
def labels_dir(shared_dir: Path) -> Path:
    """The real published label files in ../shared/datasets/labels."""
    path = shared_dir / "datasets" / "labels"
    if not path.is_dir():
        pytest.skip(f"{path} is not present")
    return path


def micro_train_argv(roots: Mapping[str, str], save_path=None, keys: Optional[Sequence[str]] = None,
                     **extra) -> List[str]:
    """train.py arguments of a tiny run: the datasets ``keys`` (default: all of ``roots``, {key: root}), the micro
    model, 2 epochs, 8 images per step; ``extra`` overrides or adds options (a list repeats, True is a bare flag)."""
    from promptiqa.models import PRESETS

    micro = PRESETS["micro"]
    keys = list(roots) if keys is None else list(keys)
    values = dict(dataset=keys, batch_size=8, epochs=2, backbone=micro["backbone"], image_size=micro["image_size"],
                  backbone_kwargs=json.dumps(micro["backbone_kwargs"]), pretrained_backbone="false", workers=0,
                  lr=1e-4, log_every=2)
    if save_path is not None:
        values["save_path"] = str(save_path)
    values.update(extra)
    argv = []
    for key, value in values.items():
        flag = f"--{key}"
        if isinstance(value, list):
            argv += [flag, *map(str, value)]
        elif value is True:
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    for key in keys:
        argv += ["--data_root", f"{key}={roots[key]}"]
    return argv


def copy_of_run(run: Path, tmp_path: Path) -> Path:
    """This test's own copy of a run trained once per session, at tmp_path/run (tests that resume it change it)."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.fixture(scope="session")
def train_argv():
    """``micro_train_argv``: ``train_argv(data, save_path, **options)`` is a tiny run's command line."""
    return micro_train_argv


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> dict:
    """Two fixture datasets the training tests run on, {key: root}: koniq10k (split by image, 24 images) and csiq
    (split by reference, 5 references x 4). Built once per session; tests must not write into them."""
    from tests.fixtures.datasets import build_fixture

    base = tmp_path_factory.mktemp("datasets")
    return {"koniq10k": str(build_fixture("koniq10k", base / "koniq", n_refs=6, per_ref=4, seed=1)),
            "csiq": str(build_fixture("csiq", base / "csiq", n_refs=5, per_ref=4, seed=2))}


@pytest.fixture(scope="module")
def app_files(tmp_path_factory) -> dict:
    """The app tests' files: a micro checkpoint (seed 3); 5 prompt images (PNG) with a prompt.csv of 1-5 stars; 4
    query images (JPEG and PNG) and a broken one."""
    from tests.helpers import _micro_checkpoint, _write_image

    root = tmp_path_factory.mktemp("app")
    ckpt = _micro_checkpoint(root / "micro.pth.tar", seed=3)
    prompt = [_write_image(root / "prompt" / f"p{i}.png", seed=200 + i) for i in range(5)]
    stars = [1.0, 2.0, 3.0, 5.0, 4.0]
    (root / "prompt" / "prompt.csv").write_text("image,score\n" + "".join(f"{p.name},{s:g}\n"
                                                                          for p, s in zip(prompt, stars)))
    queries = [_write_image(root / "queries" / f"q{i}.{'jpg' if i % 2 else 'png'}", seed=300 + i) for i in range(4)]
    junk = root / "queries" / "broken.jpg"
    junk.write_text("not an image")
    return dict(root=root, ckpt=ckpt, prompt=prompt, stars=stars, csv=root / "prompt" / "prompt.csv",
                queries=queries, junk=junk)


@pytest.fixture(scope="module")
def app_server(app_files, tmp_path_factory):
    """The app serving ``app_files``' checkpoint, one per test module; stopping it must exit 130 and leave its
    temporary folder empty."""
    from tests.helpers import AppServer

    app = AppServer(tmp_path_factory.mktemp("server"), "--checkpoint", str(app_files["ckpt"]), "--device", "cpu")
    yield app
    assert app.stop() == 130, app.log.read_text()
    assert app.leftovers() == [], "uploads left behind"
