"""Which modules each extra of pyproject.toml provides, and the check a command runs before it starts: a command
whose extra is missing is refused in one line naming ``pip install "promptiqa[EXTRA]"`` (promptiqa.cli declares
each command's extra)."""
from __future__ import annotations

import importlib.util
from typing import Dict, Optional, Tuple

from promptiqa.errors import PromptIQAError

# The modules each extra of pyproject.toml installs that its commands import, by import name (tests/test_install.py
# checks each comes from a distribution the extra requires). A command's extra is checked before it runs.
_TRAIN = ("openpyxl", "xlrd", "matplotlib")
EXTRA_MODULES: Dict[str, Tuple[str, ...]] = {
    "train": _TRAIN,                             # metrics, plots, Excel and MATLAB label files
    "demo": _TRAIN + ("skimage",),               # + the demo's photographs and its SSIM/PSNR labels
    "paper": _TRAIN + ("piq",),                  # + Table 3's full-reference relabelling (SSIM, FSIM, LPIPS)
    "app": ("gradio", "matplotlib", "skimage"),  # the page, its chart, the bundled examples (the demo's photographs)
}


class ExtraMissing(PromptIQAError):
    """A command whose extra of pyproject.toml is not installed."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:   # a finder that refuses the name (an import hook) counts as not installed
        return False


def require_extra(extra: Optional[str], who: str) -> None:
    """Refuse, before anything is read or written, to run ``who`` (the command as typed) when a module that
    ``extra`` provides is not installed; looked up with find_spec, so nothing heavy is imported."""
    missing = [module for module in EXTRA_MODULES.get(extra, ()) if not _installed(module)]
    if missing:
        raise ExtraMissing(f"{who} needs the {extra} extra ({', '.join(missing)} not installed): "
                           f'pip install "promptiqa[{extra}]"')
