"""`pip install .` gives a complete tool: the wheel, installed outside the checkout, runs its commands from an empty
folder with its own configs.

The wheel is built once per session from a copy of the files a build reads (no stale build/ folder can leak into it)
and installed with --no-deps into a fresh virtual environment that reaches this venv's packages (torch, ...) through
a .pth file: torch is never reinstalled, and nothing is downloaded (--no-index).

With real dependency resolution (pip without --no-deps), a fresh virtual environment reaches, through a .pth file,
a folder of symlinks to exactly the distributions of this venv that the core requirements need (their closure,
read from the wheel's metadata); pip installs the wheel with --no-index and no configuration, so it must find every
requirement satisfied there. A second folder adds the [app] extra's closure the same way.
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
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

import pytest

from promptiqa.cli import EXTRA_MODULES
from tests.helpers import AppServer, _micro_checkpoint, _write_image

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ["pyproject.toml", "setup.py", "README.md", "LICENSE", "requirements.txt", "promptiqa", "configs"]


def _run(cmd, cwd, timeout=180, **kwargs):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # only the install counts
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          **kwargs)


def _venv(folder: Path, paths: Iterable) -> Path:
    """A fresh virtual environment (no pip) that also sees ``paths`` through a .pth file; returns its python."""
    made = _run([sys.executable, "-m", "venv", "--without-pip", folder], cwd=folder.parent)
    assert made.returncode == 0, made.stderr
    python = folder / "bin" / "python"
    if not python.exists():
        pytest.skip("this test expects a POSIX virtual environment layout (venv/bin)")
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=folder).stdout.strip()
    (Path(site) / "test_venv_packages.pth").write_text("".join(f"{p}\n" for p in paths))  # plain paths: no nested .pth
    return python


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
    python = _venv(venv, dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
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
    assert {"torch>=2.1", "timm>=1.0.9", "opencv-python>=4.8"} <= core and "scipy>=1.10" in core and not {"openpyxl>=3.1", "piq>=0.8"} & core


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


@pytest.mark.parametrize("install", ["installed", "resolved"])
def test_installed_command_scores_a_folder(install, request, tmp_path):
    """From the wheel with this venv's packages, and with pip's own resolution of the core requirements."""
    bin_dir = request.getfixturevalue(install)[1]
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
    extras = ["openpyxl", "xlrd", "matplotlib", "piq", "skimage", "gradio", "gradio_client", "selenium",
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


# --------------------------------------------------------------------------------------------------------------
# real dependency resolution: the core install, then the core install with [app]


def _requirements(wheel: Path) -> list:
    """The wheel's Requires-Dist lines, parsed."""
    requirements = pytest.importorskip("packaging.requirements", reason="reading markers needs packaging")
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    return [requirements.Requirement(line) for line in re.findall(r"^Requires-Dist: (.+)$", meta, re.M)]


def _closure(wheel: Path, extras: Sequence[str] = ()) -> Dict[str, metadata.Distribution]:
    """{name: distribution of this venv} that the wheel's requirements need with ``extras``: markers evaluated,
    extras followed (the wheel's own, promptiqa[train], and its dependencies'), recursively."""
    own = _requirements(wheel)
    found: Dict[str, metadata.Distribution] = {}
    seen = set()
    todo = [(req, extra) for req in own for extra in ("", *extras)]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if (name, tuple(sorted(req.extras))) in seen:
            continue
        seen.add((name, tuple(sorted(req.extras))))
        if name == "promptiqa":
            todo += [(r, e) for r in own for e in req.extras]
            continue
        try:
            found[name] = dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req} (needed by the wheel{extras and f' with {extras}'}) is not installed in this venv")
        needs = [type(req)(line) for line in dist.requires or []]
        todo += [(r, e) for r in needs for e in ("", *req.extras)]
    return found


def _link(dists: Iterable[metadata.Distribution], folder: Path) -> Path:
    """A folder of symlinks to what ``dists`` installed in site-packages (their top-level entries and .dist-info)."""
    folder.mkdir()
    for dist in dists:
        assert dist.files is not None, f"{dist.metadata['Name']} records no files"
        for top in sorted({f.parts[0] for f in dist.files} - {"..", "__pycache__"}):
            if not (folder / top).exists():   # a namespace folder shared by several distributions (nvidia/)
                (folder / top).symlink_to(Path(dist.locate_file(top)))
    return folder


def _pip_install(python: Path, spec: str, cwd: Path) -> subprocess.CompletedProcess:
    """This venv's pip installing ``spec`` into ``python``'s environment, resolving dependencies, with no index, no
    configuration file and no PIP_* variable (find-links included): nothing can come from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index",
                           "--disable-pip-version-check", spec], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=dict(env, PIP_CONFIG_FILE=os.devnull))


def _resolved_venv(wheel: Path, folder: Path, links: Sequence[Path], extras: Sequence[str] = ()) -> Path:
    """The bin folder of a fresh venv seeing ``links``, where pip installed the wheel with ``extras``."""
    folder.mkdir()
    python = _venv(folder / "venv", links)
    spec = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    done = _pip_install(python, spec, folder)
    assert done.returncode == 0, done.stdout + done.stderr
    # every requirement was found satisfied in the linked folders: pip installed the wheel and nothing else
    assert re.search(r"^Installing collected packages: promptiqa$", done.stdout, re.M), done.stdout
    return python.parent


@pytest.fixture(scope="session")
def core_links(installed, tmp_path_factory):
    """A folder linking exactly the closure of the core requirements."""
    return _link(_closure(installed[0]).values(), tmp_path_factory.mktemp("links") / "core")


@pytest.fixture(scope="session")
def resolved(installed, core_links, tmp_path_factory):
    """(the wheel, the bin folder of a venv where pip resolved the core requirements, an empty working folder)."""
    tmp = tmp_path_factory.mktemp("resolved")
    bin_dir = _resolved_venv(installed[0], tmp / "core", [core_links])
    (tmp / "empty").mkdir()
    return installed[0], bin_dir, tmp / "empty"


def test_each_extra_installs_the_modules_its_commands_need(installed):
    """The modules the command registry checks for an extra all come from distributions that extra installs."""
    wheel = installed[0]
    core = set(_closure(wheel))
    owners = metadata.packages_distributions()
    for extra, modules in EXTRA_MODULES.items():
        installs = set(_closure(wheel, [extra])) - core
        for module in modules:
            assert {re.sub(r"[-_.]+", "-", d).lower() for d in owners.get(module, [])} & installs, \
                f"[{extra}] does not install {module}"


def test_a_core_install_refuses_commands_whose_extra_is_missing(resolved, tmp_path):
    """demo, test and app (and train.py, test.py, python -m promptiqa.demo) stop with one line naming the extra,
    before creating anything; their --help works; pip refuses [app] as nothing provides it."""
    wheel, bin_dir, _ = resolved
    python = bin_dir / "python"
    for program, arguments, extra in (([bin_dir / "promptiqa", "demo"], [], "demo"),
                                      ([bin_dir / "promptiqa", "test"], ["--checkpoint", "x.pth"], "train"),
                                      ([bin_dir / "promptiqa", "app"], ["--device", "cpu"], "app"),
                                      ([python, ROOT / "train.py"], ["--epochs", "1"], "train"),
                                      ([python, ROOT / "test.py"], [], "train"),
                                      ([python, "-m", "promptiqa.demo"], [], "demo")):
        work = tmp_path / extra / Path(str(program[-1])).name
        work.mkdir(parents=True)
        proc = _run([*program, *arguments], cwd=work)
        assert proc.returncode == 1 and proc.stdout == "", (program, proc.stdout, proc.stderr)
        assert re.fullmatch(rf'error: \S.* needs the {extra} extra \(\S.* not installed\): '
                            rf'pip install "promptiqa\[{extra}\]"\n', proc.stderr), (program, proc.stderr)
        assert list(work.iterdir()) == [], program                          # nothing created
        if program[0] != python:   # the shims' --help is the same code path
            proc = _run([*program, "--help"], cwd=work)
            assert proc.returncode == 0 and proc.stdout.startswith("usage:"), (program, proc.stderr)
    refused = _pip_install(python, f"{wheel}[app]", tmp_path)
    assert refused.returncode != 0 and "No matching distribution found" in refused.stderr, refused.stderr


def test_adding_the_app_extra_serves_the_page(installed, core_links, tmp_path_factory, tmp_path):
    wheel = installed[0]
    core = _closure(wheel)
    links = _link([dist for name, dist in _closure(wheel, ["app"]).items() if name not in core],
                  tmp_path_factory.mktemp("links") / "app")
    bin_dir = _resolved_venv(wheel, tmp_path / "app", [core_links, links], extras=["app"])
    ckpt = _micro_checkpoint(tmp_path / "micro.pth.tar")
    server = AppServer(tmp_path / "server", "--checkpoint", str(ckpt), "--device", "cpu",
                       program=[str(bin_dir / "promptiqa")])
    try:
        with urllib.request.urlopen(server.url, timeout=60) as response:
            status, page = response.status, response.read().decode()
    finally:
        code = server.stop()
    assert status == 200 and "<html" in page.lower(), page[:200]
    assert code == 130, server.log.read_text()
