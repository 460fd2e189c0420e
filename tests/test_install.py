"""`pip install .` gives a complete tool: the wheel, installed outside the checkout, runs its commands from an empty
folder with its own configs.

The wheel is built once per session from a copy of the files a build reads (no stale build/ folder can leak into it)
and installed with --no-deps into a fresh virtual environment that reaches this venv's packages (torch, ...) through
a .pth file: torch is never reinstalled, and nothing is downloaded (--no-index).
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.test_predict import _micro_checkpoint, _write_image

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ["pyproject.toml", "setup.py", "README.md", "LICENSE", "requirements.txt", "promptiqa", "configs"]


def _run(cmd, cwd, timeout=180, **kwargs):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # only the install counts
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          **kwargs)


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """(the wheel, the bin folder of a fresh venv holding it, an empty working folder)."""
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this venv")
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                  "-w", tmp / "dist", src], cwd=tmp)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp / "dist").glob("promptiqa-*.whl"))

    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    if not python.exists():
        pytest.skip("this test expects a POSIX virtual environment layout (venv/bin)")
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "test_venv_packages.pth").write_text("\n".join(ours) + "\n")  # a plain path: no nested .pth runs
    done = _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp)
    assert done.returncode == 0, done.stderr
    empty = tmp / "empty"
    empty.mkdir()
    return wheel, venv / "bin", empty


def test_wheel_ships_the_configs_and_declares_the_command(installed):
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    shipped = {Path(n).name for n in names if n.startswith("promptiqa/configs/")}
    assert shipped == {p.name for p in (ROOT / "configs").glob("*.yaml")} and "demo.yaml" in shipped
    assert {"promptiqa/paper/paper_tables.csv", "promptiqa/paper/README.md"} <= names   # the paper's figures
    assert not any(n.startswith(("tests/", "scripts/", "configs/")) for n in names)
    assert "promptiqa/data/published_splits.json.gz" in names   # `promptiqa check --splits` needs no checkout
    assert re.search(r"^promptiqa = promptiqa\.cli:main$", entry_points, re.M)
    # requirements.txt installs everything: the wheel's core and extras together, pin for pin
    declared = {m.group(1).replace(" ", "") for m in re.finditer(r"^Requires-Dist: ([^;\n]+)", meta, re.M)}
    declared = {d for d in declared if not d.startswith(("promptiqa[", "pytest"))}
    listed = {line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()}
    assert declared == listed - {""}
    core = {m.group(1) for m in re.finditer(r"^Requires-Dist: ([^;\n]+)$", meta, re.M)}
    assert {"torch>=2.1", "timm>=1.0.9", "opencv-python>=4.8"} <= core and not {"scipy>=1.10", "piq>=0.8"} & core


def test_installed_command_runs_from_an_empty_folder(installed, tmp_path):
    _, bin_dir, empty = installed
    proc = _run([bin_dir / "promptiqa", "--help"], cwd=empty)
    assert proc.returncode == 0 and all(name in proc.stdout for name in ("score", "isp", "demo")), proc.stderr
    # every command's --help, the demo through both of its entry points, and the shipped configs found by name
    check = ("import json\n"
             "import promptiqa\n"
             "from promptiqa.cli import COMMANDS, main\n"
             "from promptiqa.config import load_yaml\n"
             "from promptiqa.demo.run import DEFAULT_CONFIG, DemoConfig\n"
             "from promptiqa.paper import PAPER_FILE, paper_value\n"
             "print(json.dumps(dict(codes=[main([name, '--help']) for name in COMMANDS], package=promptiqa.__file__,\n"
             "    demo=str(DEFAULT_CONFIG), save_path=DemoConfig.from_yaml(DEFAULT_CONFIG).save_path,\n"
             "    paper=[load_yaml('configs/paper.yaml')['batch_size'], load_yaml('paper')['epochs']],\n"
             "    figures=[str(PAPER_FILE), paper_value('table2', 'promptiqa', 'live', 'srocc')])))\n")
    proc = _run([bin_dir / "python", "-c", check], cwd=empty)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    venv = str(bin_dir.parent)
    assert result["codes"] and set(result["codes"]) == {0}
    assert result["package"].startswith(venv)                                  # the installed copy, not the checkout
    assert result["demo"].startswith(venv) and result["demo"].endswith(os.path.join("promptiqa", "configs", "demo.yaml"))
    assert result["save_path"] == "runs/demo" and result["paper"] == [66, 100]  # configs by path and by name
    assert result["figures"][0].startswith(venv) and result["figures"][1] == 0.9359  # the paper's, from the wheel
    proc = _run([bin_dir / "python", "-m", "promptiqa.demo", "--help"], cwd=empty)
    assert proc.returncode == 0 and "--full" in proc.stdout, proc.stderr
    assert sorted(os.listdir(empty)) == []                                      # --help writes nothing


def test_installed_command_scores_a_folder(installed, tmp_path):
    _, bin_dir, empty = installed
    ckpt = _micro_checkpoint(tmp_path / "micro.pth.tar")
    prompts = [_write_image(tmp_path / "prompt" / f"p{i}.png", seed=100 + i) for i in range(3)]
    (tmp_path / "prompt" / "prompt.csv").write_text("image,score\n" + "".join(f"{p.name},{i + 1}\n"
                                                                             for i, p in enumerate(prompts)))
    for i in range(2):
        _write_image(tmp_path / "photos" / f"q{i}.jpg", seed=i)
    work = tmp_path / "work"
    work.mkdir()
    proc = _run([bin_dir / "promptiqa", "score", "--checkpoint", ckpt, "--prompt", tmp_path / "prompt" / "prompt.csv",
                 "--workers", "0", "--device", "cpu", tmp_path / "photos", "--out", "scores.csv"], cwd=work)
    assert proc.returncode == 0, proc.stderr
    with open(work / "scores.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image", "score"] and [Path(r[0]).name for r in rows[1:]] == ["q0.jpg", "q1.jpg"]
    assert all(1 <= float(r[1]) <= 3 for r in rows[1:])


def test_scoring_needs_only_the_core_dependencies(installed, tmp_path):
    """What `pip install .` leaves out (the extras) is never imported by promptiqa score."""
    _, bin_dir, _ = installed
    ckpt = _micro_checkpoint(tmp_path / "micro.pth.tar")
    prompts = [_write_image(tmp_path / f"p{i}.png", seed=100 + i) for i in range(3)]
    (tmp_path / "prompt.csv").write_text("image,score\n" + "".join(f"{p.name},{i}\n" for i, p in enumerate(prompts)))
    extras = ["scipy", "openpyxl", "xlrd", "matplotlib", "piq", "skimage", "gradio", "gradio_client", "selenium",
              "tensorboard"]
    code = ("import sys\n"
            "class Block:\n"
            f"    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {extras!r}: raise ImportError('extra not installed: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from promptiqa.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    proc = _run([bin_dir / "python", "-c", code, "score", "--checkpoint", ckpt, "--prompt", tmp_path / "prompt.csv",
                 "--device", "cpu", "--quiet", *prompts[:2]], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(list(csv.reader(proc.stdout.splitlines()))) == 3
