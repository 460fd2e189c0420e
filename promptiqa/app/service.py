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
    """A requirement kept in a session: its encoded prompt (promptiqa.prompt_files.EncodedPrompt), where it came from, and
    how well the model follows it on its own images (a RequirementCheck; None for a saved prompt: it keeps none)."""

    name: str
    prompt: object
    source: str
    check: object = None

    def check_line(self) -> str:
        """The requirement check as the page says it: the command line's sentence, in bold when it is low."""
        from promptiqa.predict import NO_CHECK_FOR_SAVED_PROMPT

        if self.check is None:
            return NO_CHECK_FOR_SAVED_PROMPT.capitalize() + "."
        line = self.check.line()
        line = line[0].upper() + line[1:] + "."
        return line if self.check.follows else f"**{line}**"

    def check_cell(self) -> str:
        """The check's figure for the requirements table."""
        if self.check is None:
            return "n/a (saved prompt)"
        value = self.check.srocc
        figure = f"{value:.2f}" if np.isfinite(value) else "undefined"
        return figure if self.check.follows else f"**{figure}: not followed**"

    def scale(self) -> str:
        """The score scale in words, e.g. ``1-5, higher is better``."""
        s = self.prompt.scale
        return f"{s.low:g}-{s.high:g}, {'higher' if s.higher_is_better else 'lower'} is better"


@dataclass
class Session:
    """One browser session's requirements, by name, in the order they were added."""

    requirements: Dict[str, Requirement] = field(default_factory=dict)

    def refuse_taken(self, name: str) -> str:
        """``name`` when no requirement has it; a UserError otherwise (a requirement is never replaced unsaid)."""
        if name in self.requirements:
            raise UserError(f"a requirement named {name!r} exists already: give this one another name, or remove "
                            f"that one first (below)")
        return name

    def add(self, requirement: Requirement) -> str:
        """Keep ``requirement`` (refused when its name is taken); returns the confirmation and the requirement check."""
        self.requirements[self.refuse_taken(requirement.name)] = requirement
        return (f"Added requirement **{html.escape(requirement.name)}**: {requirement.prompt.isp_num} images "
                f"({requirement.source}), scale {requirement.scale()}.\n\n{requirement.check_line()}")

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
        rows = [f"| {html.escape(r.name)} | {r.prompt.isp_num} | {r.scale()} | {html.escape(r.source)} | "
                f"{r.check_cell()} |" for r in self.requirements.values()]
        return "\n".join(["| requirement | images | scale | from | requirement check (leave-one-out SROCC) |",
                          "|---|---|---|---|---|", *rows])


# --------------------------------------------------------------------------------------------------------------
# the model, shared by all sessions


def describe_model(predictor, reference: str, origin: str) -> str:
    """The model line: the checkpoint as given, what it is, its backbone and input size; for a model of the demo's
    small input size, what that means for real photographs."""
    from promptiqa.data.images import DEFAULT_IMAGE_SIZE

    config = predictor.model.config
    line = (f"**Model:** `{reference}` ({origin}): {config.get('backbone')}, {predictor.image_size} px input, on "
            f"{predictor.device}.")
    demo = _demo_model()
    if demo is not None and predictor.image_size <= demo[0]["image_size"]:
        s = predictor.image_size
        line += (f" **Every image is resized to {s}x{s} pixels before it is scored**: fine detail, and blur or noise "
                 f"at the scale of a photograph, are not seen, so scores of real photos say little.")
        if all(config.get(key) == value for key, value in demo[0].items()):
            line += (f" This is the demo's model: it learnt the demo's synthetic requirements ({', '.join(demo[1])}, "
                     f"on {s} px crops); use it for those, and the authors' release "
                     f"(`--checkpoint hf:Zevin2023/PromptIQA`, {DEFAULT_IMAGE_SIZE} px) for photographs.")
    return line


def demo_settings() -> Optional[dict]:
    """The shipped configs/demo.yaml as data (where the demo saves its models, what they are); None without it (an
    install without configs/). Read as a file, so the app imports nothing of the demo."""
    import yaml

    from promptiqa.resources import shipped_config

    path = shipped_config("demo.yaml")
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else None


def _demo_model():
    """What the demo's model is (backbone, its settings, input size) and the requirements it learns; None without
    the demo's config."""
    settings = demo_settings()
    if settings is None:
        return None
    train = settings.get("train") or {}
    model = {key: train[key] for key in ("backbone", "backbone_kwargs", "image_size") if key in train}
    return model, list(settings.get("train_requirements") or [])


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
                prompt = self.predictor.prompts[key]
            finally:
                self.predictor.prompts.pop(key, None)
        pairs = prompt.tensor.shape[1]
        if pairs > MAX_PROMPT_IMAGES:   # every scoring would fuse them all: minutes, for every session
            raise UserError(f"{path.name} holds {pairs} pairs; at most {MAX_PROMPT_IMAGES} per requirement")
        return prompt

    def check(self, prompt):
        """The requirement check of a prompt encoded here (a RequirementCheck; None for a saved prompt)."""
        if prompt.features is None:
            return None
        with self._lock:
            return self.predictor.check_requirement(prompt)

    def score_files(self, inputs: Sequence[Path], prompts: Sequence) -> Tuple[object, np.ndarray]:
        """Image files and folders scored under ``prompts`` as ``promptiqa score`` does (a file found in a folder that
        cannot be decoded is skipped and listed; decoded inline: no worker processes in a server): (the
        ScoredFiles, its scores as an (images, prompts) array, each column in its prompt's scale)."""
        keys = [f"app-{uuid.uuid4().hex}" for _ in prompts]
        with self._lock:   # score_files takes prompts by name: file them for the call, then take them back out
            self.predictor.prompts.update(zip(keys, prompts))
            try:
                result = self.predictor.score_files([str(p) for p in inputs], prompts=keys, workers=0,
                                                    warn=lambda text: None)   # the page lists them instead
            finally:
                for key in keys:
                    self.predictor.prompts.pop(key, None)
        return result, np.stack([result.scores[key] for key in keys], axis=1)

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
# results


@dataclass
class Results:
    """Scores of images (rows) under requirements (columns), each in its requirement's scale."""

    names: List[str]
    files: List[Path]
    requirements: List[Requirement]
    scores: np.ndarray           # (images, requirements)
    seconds: float
    skipped: List[str] = field(default_factory=list)   # ScoredFiles.skipped_report: a heading, then each file

    def csv_text(self) -> str:
        """``image,<requirement>...`` with 6 decimals, the format of ``promptiqa score``."""
        from promptiqa.fileio import csv_text

        return csv_text(["image", *(r.name for r in self.requirements)],
                        ([name, *(f"{v:.6f}" for v in row)] for name, row in zip(self.names, self.scores)))

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


def score_all(scorer: Scorer, files: Sequence[Path], names: Sequence[str], folder: Path,
              requirements: Sequence[Requirement]) -> Results:
    """Score every file under every requirement: ``unpack``'s files and names, zip members unpacked under ``folder``.

    Each archive's folder is scored as ``promptiqa score`` scores a folder: a member that cannot be decoded is skipped
    and listed in ``Results.skipped`` (by its name in the archive); an undecodable loose file is an error, as a file
    named on the command line is."""
    start = time.perf_counter()
    inputs = list(dict.fromkeys(folder / Path(p).relative_to(folder).parts[0] if folder in Path(p).parents else
                                Path(p) for p in files))   # each archive's own folder (unpack's layout), loose files
    label = {str(p): name for p, name in zip(files, names)}
    result, scores = scorer.score_files(inputs, [r.prompt for r in requirements])
    report = result.skipped_report(name=lambda p: label[str(p)], where="in zip archives")
    return Results([label[str(p)] for p in result.images], list(result.images), list(requirements), scores,
                   time.perf_counter() - start, report)


def write_csv(results: Results, folder: Path) -> Path:
    """The results as ``scores.csv`` in a fresh folder under ``folder`` (the page's download)."""
    target = Path(tempfile.mkdtemp(prefix="scores-", dir=folder)) / "scores.csv"
    target.write_text(results.csv_text(), encoding="utf-8")
    return target


def remove_tree(path: Optional[Path]) -> None:
    """Delete a call's scratch folder (ignoring one already gone)."""
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
