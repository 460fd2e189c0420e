"""Helpers several test files share (plain functions and the app's server; tests/conftest.py holds the fixtures built
from them). Test files import from here, never from one another (tests/test_docs.py checks it)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import pytest
import torch

from promptiqa import Predictor
from promptiqa.models import build_model, save_checkpoint
from tests.fixtures.launchers import free_port

ROOT = Path(__file__).resolve().parents[1]
APP_STARTUP_S = 300      # importing torch and gradio on a busy 2-core machine takes most of a minute


def _write_image(path: Path, seed: int, size=(56, 72)) -> Path:
    """A blurred-noise picture; the seed sets both the content and the blur, so images get different scores."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur((rng.random((*size, 3)) * 255).astype(np.uint8), (0, 0), 0.3 + 0.6 * (seed % 6))
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def _micro_checkpoint(path: Path, seed: int = 0, **kwargs) -> Path:
    """A randomly initialised micro-preset checkpoint (torch seed ``seed``) at ``path``."""
    torch.manual_seed(seed)
    return save_checkpoint(path, build_model("promptiqa", preset="micro", **kwargs), prompt_num=10)


def check_prompts(p: Predictor, folder: Path):
    """10 images and two prompts on them for the requirement check, both on a 1-5 scale: one the model follows (its
    own scores of the images under another prompt) and the same scores reversed, which it cannot follow. Measured
    for the micro model of seed 3 on these images: leave-one-out SROCC 0.92 and -0.90 (other image sets of 6-10
    images gave 0.49 to 0.92 and -0.49 to -1.0: a random-init model follows its own ranking only roughly)."""
    images = [_write_image(folder / f"c{k}.png", seed=700 + k) for k in range(10)]
    followed = p.score(images, prompt=p.set_prompt(images, [1, 5] * 5, name="check", score_range=(1, 5)), workers=0)
    return images, [float(v) for v in followed], [6.0 - float(v) for v in followed]


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height RGB pixels, with almost no pixel data: it costs nothing to write,
    and decoding it would allocate width * height * 3 bytes before finding the data short."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))
    return path


def tensorboard_scalars(run: Path) -> Dict[str, List[Tuple[int, float]]]:
    """{tag: [(step, value)]} of a run's TensorBoard events, as TensorBoard's reader gives it (it honours the purge
    marker)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from promptiqa.engine import run_folder

    acc = EventAccumulator(str(run / run_folder.TENSORBOARD), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


class AppServer:
    """``python -m promptiqa app ARGS --port PORT`` in a subprocess, with its own TMPDIR, HF_HOME (empty, offline)
    and working folder; ``url`` once it serves. ``program`` is another command line to start (an installed
    ``promptiqa``): it runs without this checkout on its path."""

    def __init__(self, folder: Path, *args: str, program: Sequence[str] = ()):
        self.folder = Path(folder)
        self.tmp = self.folder / "tmp"
        self.cwd = self.folder / "cwd"
        for path in (self.tmp, self.cwd):
            path.mkdir(parents=True, exist_ok=True)
        self.log = self.folder / "app.log"
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "GRADIO_")) and k != "PYTHONPATH"}
        env.update(TMPDIR=str(self.tmp), HF_HOME=str(self.folder / "hf"), HF_HUB_OFFLINE="1",
                   MPLCONFIGDIR=str(self.folder / "mpl"), **({} if program else {"PYTHONPATH": str(ROOT)}))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*(program or (sys.executable, "-m", "promptiqa")), "app", *args,
                                          "--port", str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.cwd)
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + APP_STARTUP_S
        while "serving the page on" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the app did not start (exit {self.proc.returncode}):\n{self.log.read_text()}")
            time.sleep(0.5)

    def config(self) -> str:
        """The page's configuration (every component's text) as the browser receives it."""
        with urllib.request.urlopen(self.url + "config", timeout=30) as response:
            return response.read().decode()

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def leftovers(self):
        """What the app left in its temporary folder (uploads, examples, downloads)."""
        return sorted(p.name for p in self.tmp.iterdir())


def _table(text: str, first_column: str) -> dict:
    """{first cell: [cells]} of the Markdown table whose header starts with ``| first_column |``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _mapping(text: str):
    """(offset, divisor) of a mapping written as 'x', 'x / d' or '(x − o) / d' (anything after it ignored)."""
    match = re.match(r"\(x − ([\d.]+)\) / ([\d.]+)|x / ([\d.]+)|x$", text)
    assert match, text
    offset, divisor, plain = match.groups()
    return (float(offset), float(divisor)) if offset else (0.0, float(plain) if plain else 1.0)
