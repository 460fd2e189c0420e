"""What the web page does, without the page: requirements per session, uploads, scoring, and the result views.

One model serves every session; each session keeps its own named requirements (encoded prompts) and nothing else.
Uploads reach the Predictor as file paths, so an image is decoded exactly as ``promptiqa score`` decodes it.
Handlers report what went wrong as one line (``UserError`` and the package's own errors), never as a traceback.
"""
from __future__ import annotations

import base64
import html
import io
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from promptiqa.errors import PromptIQAError

MAX_PROMPT_IMAGES = 50       # pairs in one requirement (the paper's prompts hold 10)
MAX_SCORE_IMAGES = 500       # images scored in one call, zip members included
MAX_FILE_MB = 50             # each uploaded file (the server refuses larger ones)
MAX_ZIP_MB = 1000            # the images of one zip archive, uncompressed
UPLOAD_TTL_S = 3600          # uploads older than this are deleted while the app runs; all of them when it stops
DISPLAY_DECIMALS = 4         # scores in the page's table; the CSV download has 6, as `promptiqa score`
PROMPT_SUFFIXES = (".csv", ".json", ".pt", ".pth")
LIMITS = (f"Limits: {MAX_FILE_MB} MB per uploaded file; 2 to {MAX_PROMPT_IMAGES} images per requirement; up to "
          f"{MAX_SCORE_IMAGES} images per scoring (zip archives count their images, at most {MAX_ZIP_MB} MB "
          f"unpacked). Uploads stay in a temporary folder on the server for at most {UPLOAD_TTL_S // 60} minutes and "
          f"are deleted when the app stops.")


class UserError(PromptIQAError, ValueError):
    """An input the page refuses (bad table, too many files, a broken zip): shown in the page as one line."""


@dataclass
class Requirement:
    """A requirement kept in a session: its encoded prompt (promptiqa.predict.Prompt) and where it came from."""

    name: str
    prompt: object
    source: str

    def scale(self) -> str:
        """The score scale in words, e.g. ``1-5, higher is better``."""
        s = self.prompt.scale
        return f"{s.low:g}-{s.high:g}, {'higher' if s.higher_is_better else 'lower'} is better"


@dataclass
class Session:
    """One browser session's requirements, by name, in the order they were added."""

    requirements: Dict[str, Requirement] = field(default_factory=dict)

    def add(self, requirement: Requirement) -> str:
        """Keep ``requirement`` (replacing one of the same name); returns a one-line confirmation."""
        replaced = requirement.name in self.requirements
        self.requirements[requirement.name] = requirement
        return (f"{'Replaced' if replaced else 'Added'} requirement **{html.escape(requirement.name)}**: "
                f"{requirement.prompt.isp_num} images ({requirement.source}), scale {requirement.scale()}.")

    def next_name(self) -> str:
        """A free default name: ``requirement 1``, ``requirement 2``, ..."""
        i = len(self.requirements) + 1
        while f"requirement {i}" in self.requirements:
            i += 1
        return f"requirement {i}"

    def summary(self) -> str:
        """The session's requirements as a Markdown table (or a line saying there are none)."""
        if not self.requirements:
            return "No requirement yet: add one above (your images, a prompt file, or a bundled example)."
        rows = [f"| {html.escape(r.name)} | {r.prompt.isp_num} | {r.scale()} | {html.escape(r.source)} |"
                for r in self.requirements.values()]
        return "\n".join(["| requirement | images | scale | from |", "|---|---|---|---|", *rows])


# --------------------------------------------------------------------------------------------------------------
# the model, shared by all sessions


def describe_model(predictor, reference: str, origin: str) -> str:
    """One line saying which model is loaded: the checkpoint as given, what it is, its backbone and input size."""
    config = predictor.model.config
    return (f"**Model:** `{reference}` ({origin}): {config.get('backbone')}, {predictor.image_size} px input, on "
            f"{predictor.device}.")


class Scorer:
    """The Predictor behind the page: one model call at a time, prompts encoded without touching shared state."""

    def __init__(self, predictor, description: str, workdir: Path):
        self.predictor = predictor
        self.description = description
        self.workdir = Path(workdir)
        self._lock = threading.Lock()
        self._examples = None

    def encode(self, images: Sequence[Path], scores: Sequence[float], score_range=None,
               higher_is_better: bool = True):
        """The Prompt of image-score pairs (decoded from their files, as the command line does)."""
        key = f"app-{uuid.uuid4().hex}"
        with self._lock:  # set_prompt files the prompt under a name; take it back out at once
            try:
                return self.predictor.set_prompt([str(p) for p in images], list(scores), name=key,
                                                 score_range=score_range, higher_is_better=higher_is_better)
            finally:
                self.predictor.prompts.pop(key, None)

    def load_saved(self, path: Path):
        """The Prompt saved in ``path`` by ``--save_prompt`` (refused when another model encoded it)."""
        key = f"app-{uuid.uuid4().hex}"
        with self._lock:
            try:
                self.predictor.load_prompt(path, name=key)
                return self.predictor.prompts[key]
            finally:
                self.predictor.prompts.pop(key, None)

    def score(self, images: Sequence[Path], prompt) -> np.ndarray:
        """Scores of image files under ``prompt``, in its scale (decoded inline: no worker processes in a server)."""
        with self._lock:
            return self.predictor.score([str(p) for p in images], prompt=prompt, workers=0)

    def examples(self):
        """The bundled example requirements at the model's input size (written once per app, on first use)."""
        from promptiqa.app.examples import example_requirements

        with self._lock:
            if self._examples is None:
                self._examples = example_requirements(self.workdir / "examples", self.predictor.image_size)
            return self._examples


# --------------------------------------------------------------------------------------------------------------
# uploads


def display_name(path) -> str:
    """How the page names an upload: its original file name (the server keeps it as the file's last component)."""
    return Path(path).name


def _safe_member(name: str) -> Optional[Path]:
    """A zip member's relative path when it is a plain, safe one (no absolute path, no '..', no hidden part)."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or any(p == ".." or p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    return Path(*parts)


def unpack(uploads: Sequence, folder: Path, suffixes: Tuple[str, ...], limit: int, layout: bool = False
           ) -> Tuple[List[Path], List[str], List[str]]:
    """Uploaded files, zip archives expanded into ``folder``: (files, their display names, ignored names).

    Zip members are kept when their suffix is in ``suffixes`` (others are listed as ignored), each archive in a
    folder of its own, or with ``layout`` at its relative path right in ``folder`` (so a prompt CSV inside finds its
    images); loose files are kept where they are, whatever their suffix (the decoder judges them). More than
    ``limit`` files is a UserError.
    """
    files, names, ignored = [], [], []
    for upload in uploads or []:
        upload = Path(upload)
        if upload.suffix.lower() != ".zip":
            files.append(upload)
            names.append(display_name(upload))
            continue
        try:
            with zipfile.ZipFile(upload) as archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
                keep = [(m, _safe_member(m.filename)) for m in members]
                keep = [(m, rel) for m, rel in keep if rel is not None and rel.suffix.lower() in suffixes]
                kept = {m.filename for m, _ in keep}
                ignored += [f"{upload.name}:{m.filename}" for m in members if m.filename not in kept]
                if len(files) + len(keep) > limit:
                    raise UserError(f"{upload.name} holds {len(keep)} files to use; at most {limit} per call")
                if sum(m.file_size for m, _ in keep) > MAX_ZIP_MB * 2 ** 20:
                    raise UserError(f"{upload.name} unpacks to more than {MAX_ZIP_MB} MB")
                target = folder if layout else Path(tempfile.mkdtemp(prefix="zip-", dir=folder))
                for member, rel in keep:
                    path = target / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as src, open(path, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    files.append(path)
                    names.append(f"{upload.name}:{rel.as_posix()}")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as err:
            raise UserError(f"{upload.name} is not a zip archive this page can read ({err})") from None
    if len(files) > limit:
        raise UserError(f"{len(files)} files uploaded; at most {limit} per call")
    return files, names, ignored


def scratch_folder(workdir: Path) -> Path:
    """A fresh folder for one call's unpacked files (the caller removes it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="call-", dir=workdir))


def clean_message(err: BaseException, names: Dict[str, str]) -> str:
    """An error as one line, with server-side temporary paths replaced by the names the user uploaded."""
    from promptiqa.errors import one_line

    text = one_line(err)
    for path, name in sorted(names.items(), key=lambda item: -len(item[0])):
        text = text.replace(path, name)
    return text


# --------------------------------------------------------------------------------------------------------------
# requirements from the page's inputs


def parse_scale(low, high) -> Optional[Tuple[float, float]]:
    """The score range typed in the page (both ends, or neither)."""
    given = [v for v in (low, high) if v is not None and str(v).strip() != ""]
    if not given:
        return None
    if len(given) == 1:
        raise UserError("give both ends of the score range, or neither (then the scores' own min and max are used)")
    try:
        return float(low), float(high)
    except (TypeError, ValueError):
        raise UserError(f"the score range ({low!r}, {high!r}) is not two numbers") from None


def table_scores(rows: Sequence[Sequence], names: Sequence[str]) -> List[float]:
    """The scores typed in the page's table, one per uploaded image, in upload order."""
    rows = [list(r) for r in (rows or []) if any(str(c).strip() for c in r)]
    if len(rows) != len(names):
        raise UserError(f"the table has {len(rows)} rows for {len(names)} uploaded images: upload the images first, "
                        f"then type one score per row")
    scores = []
    for i, (row, name) in enumerate(zip(rows, names), start=1):
        if str(row[0]) != name:
            raise UserError(f"row {i} names {row[0]!r} but image {i} is {name!r}: upload the images again")
        value = str(row[1] if len(row) > 1 and row[1] is not None else "").strip()
        if not value:
            raise UserError(f"row {i} ({name}): no score; type one for every image")
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"row {i} ({name}): score {value!r} is not a number") from None
        if not np.isfinite(number):
            raise UserError(f"row {i} ({name}): score {value!r} is not a finite number")
        scores.append(number)
    return scores


# --------------------------------------------------------------------------------------------------------------
# results


@dataclass
class Results:
    """Scores of images (rows) under requirements (columns), each in its requirement's scale."""

    names: List[str]
    files: List[Path]
    requirements: List[Requirement]
    scores: np.ndarray           # (images, requirements)
    seconds: float

    def csv_text(self) -> str:
        """``image,<requirement>...`` with 6 decimals, the format of ``promptiqa score``."""
        import csv

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["image", *(r.name for r in self.requirements)])
        writer.writerows([name, *(f"{v:.6f}" for v in row)] for name, row in zip(self.names, self.scores))
        return out.getvalue()

    def html(self) -> str:
        """The table the page shows: thumbnail, file name, one score column per requirement."""
        head = "".join(f"<th>{html.escape(r.name)}<br><small>{html.escape(r.scale())}</small></th>"
                       for r in self.requirements)
        rows = []
        for i, (name, path, row) in enumerate(zip(self.names, self.files, self.scores), start=1):
            cells = "".join(f'<td class="score" data-requirement="{html.escape(r.name)}">{v:.{DISPLAY_DECIMALS}f}</td>'
                            for r, v in zip(self.requirements, row))
            rows.append(f'<tr><td>{i}</td><td>{thumbnail(path)}</td><td class="image">{html.escape(name)}</td>'
                        f'{cells}</tr>')
        return (f'<table id="scores-table" class="promptiqa-scores"><thead><tr><th>#</th><th></th><th>image</th>'
                f'{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')

    def chart(self):
        """A matplotlib Figure: one bar chart per requirement (each on its own scale), images along x."""
        from matplotlib.figure import Figure  # no pyplot: nothing process-wide changes

        k, n = len(self.requirements), len(self.names)
        fig = Figure(figsize=(min(14, 4 + 0.35 * n), 1.2 + 2.0 * k), layout="constrained")
        axes = fig.subplots(k, 1, sharex=True, squeeze=False)[:, 0]
        x = np.arange(n)
        for ax, req, column in zip(axes, self.requirements, self.scores.T):
            ax.bar(x, column, color="#3b6ea8")
            s = req.prompt.scale
            ax.set_ylim(s.low, s.high)
            ax.set_ylabel(req.name if len(req.name) <= 18 else req.name[:16] + "...", fontsize=9)
            ax.set_title(f"{req.name}: {req.scale()}", fontsize=9, loc="left")
        if n <= 40:
            axes[-1].set_xticks(x, [name if len(name) <= 24 else "..." + name[-21:] for name in self.names],
                                rotation=60, ha="right", fontsize=8)
        else:
            axes[-1].set_xlabel(f"{n} images, in upload order")
        return fig


def thumbnail(path: Path, size: int = 72) -> str:
    """An <img> holding a small PNG of the image (inline, so the page serves no extra files)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.draft("RGB", (size * 2, size * 2))   # JPEGs decode at a reduced scale: fast for large photos
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except Exception:  # the Predictor decoded it (OpenCV); PIL cannot: no thumbnail, the score stands
        return ""
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="" style="max-width:{size}px;max-height:{size}px">'


def score_all(scorer: Scorer, files: Sequence[Path], names: Sequence[str],
              requirements: Sequence[Requirement]) -> Results:
    """Score every file under every requirement."""
    start = time.perf_counter()
    columns = [scorer.score(files, r.prompt) for r in requirements]
    return Results(list(names), list(files), list(requirements), np.stack(columns, axis=1),
                   time.perf_counter() - start)


def write_csv(results: Results, folder: Path) -> Path:
    """The results as ``scores.csv`` in a fresh folder under ``folder`` (the page's download)."""
    target = Path(tempfile.mkdtemp(prefix="scores-", dir=folder)) / "scores.csv"
    target.write_text(results.csv_text(), encoding="utf-8")
    return target


def remove_tree(path: Optional[Path]) -> None:
    """Delete a call's scratch folder (ignoring one already gone)."""
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
