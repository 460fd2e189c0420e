"""Files the package reads at run time, found alike from a checkout and from an installed wheel.

The YAML configs live in ``configs/`` at the repository root; a wheel carries the same files as ``promptiqa/configs``
(setup.py maps the folder there), so ``config_file`` is the one place that turns a config's name into a file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Union

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_SUFFIX = ".yaml"
# The official model's test vector and state-dict manifest: repository files (1 MB) that the wheel does not carry.
REFERENCE_FIXTURES = Path("tests") / "fixtures" / "reference"


def configs_dir() -> Path:
    """The folder of the shipped configs: ``promptiqa/configs`` in an installed wheel, else the checkout's ``configs``."""
    installed = PACKAGE_DIR / "configs"
    return installed if installed.is_dir() else PACKAGE_DIR.parent / "configs"


def shipped_config(name: str) -> Path:
    """The shipped config ``name`` (``demo`` or ``demo.yaml``), whether or not a file of that name is in the working
    folder: the defaults a user's file is merged over."""
    return configs_dir() / (name if Path(name).suffix else name + CONFIG_SUFFIX)


def config_file(name: Union[str, os.PathLike]) -> Path:
    """A config given by path or by name: an existing file as given; otherwise the shipped config of that name.

    ``demo``, ``demo.yaml`` and ``configs/demo.yaml`` all name the shipped ``demo.yaml`` when no such file exists
    where the command runs, so the README's commands work from any folder once the package is installed. A name
    that matches nothing comes back unchanged, for the caller's "not found" message.
    """
    path = Path(name)
    if path.is_file():
        return path
    if path.parent in (Path("."), Path("configs")):
        shipped = shipped_config(path.name)
        if shipped.is_file():
            return shipped
    return path


def checkout_root() -> Optional[Path]:
    """The repository the package runs from (a git checkout, editable install or PYTHONPATH), or None when installed.

    Run provenance asks git for the commit only here: the folder above an installed package is site-packages, which
    may itself sit inside some unrelated repository.
    """
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "configs").is_dir() else None


def reference_fixtures() -> Optional[Path]:
    """The checkout's tests/fixtures/reference (the official model's test vector and state-dict manifest), or None for
    an installed package, which does not carry them."""
    root = checkout_root()
    return root / REFERENCE_FIXTURES if root is not None and (root / REFERENCE_FIXTURES).is_dir() else None


def python_env(**extra: str) -> Dict[str, str]:
    """The environment for a child ``python -m promptiqa...``: this one, with the folder holding this package first
    on PYTHONPATH, so the child imports the same code (a checkout that is not installed, or the installed package)."""
    paths = [str(PACKAGE_DIR.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), **extra}
