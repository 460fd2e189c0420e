"""Writing files so that a failure never leaves a partial file behind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path, write, binary: bool = False) -> None:
    """Call ``write(file)`` on a temp file in ``path``'s folder, then rename it to ``path``: a failure leaves no
    partial file and an existing ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; give the file the usual permissions
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else dict(newline="", encoding="utf-8"))) as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
