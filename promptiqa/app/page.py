"""The gradio page: set requirements (your scored images, a prompt file, a bundled example), score images under each.

Built by ``build_page`` from a Scorer (None: no model, and the page says how to get one); served by ``serve``.
Each event has an API name, so ``gradio_client`` drives the page exactly as the browser does.
"""
from __future__ import annotations

import html
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

from promptiqa.app.prompt_table import TABLE_HEADERS, parse_scale, prompt_images, prompt_table, table_scores
from promptiqa.app.service import (LIMITS, MAX_FILE_MB, MAX_PROMPT_IMAGES, MAX_SCORE_IMAGES, PROMPT_SUFFIXES,
                                   UPLOAD_TTL_S, Requirement, Scorer, Session, UserError, clean_message,
                                   display_name, remove_tree, score_all, scratch_folder, unpack, write_csv)

TITLE = "PromptIQA"
HIGHER, LOWER = "higher is better", "lower is better"
INTRO = ("Show the model a few images with the scores *you* would give them (any scale), and it scores new images "
         "the same way: that is a **requirement**. Keep several, and score the same images under each, side by side.")
NO_MODEL = (
    "**No model is loaded**, so nothing can be scored yet. The page needs a PromptIQA checkpoint: run "
    "`bash scripts/demo.sh` once (about 12 minutes on 2 CPU cores; it trains the demo's model, "
    "`runs/demo/promptiqa/last.pth.tar`, which this page then finds by itself), or fetch the authors' released "
    "weights once with `promptiqa app --checkpoint hf:Zevin2023/PromptIQA` (1.3 GB, kept in the Hugging Face cache "
    "and found there by itself afterwards, offline too), or pass any checkpoint with `--checkpoint FILE`. Then start "
    "the app again.")
CSS = """
.promptiqa-scores { border-collapse: collapse; font-variant-numeric: tabular-nums; }
.promptiqa-scores th, .promptiqa-scores td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
.promptiqa-scores td.image { text-align: left; }
"""


def _error(err: BaseException, names=None) -> str:
    """The page's one-line message for ``err``; an unexpected one (a bug) also leaves its traceback in the log."""
    from promptiqa.errors import is_user_error

    message = clean_message(err, names or {})
    if is_user_error(err):
        return f"**Error:** {message}"
    traceback.print_exc()
    return f"**Error:** unexpected {type(err).__name__}: {message} (the server's log has the details)"


def _requirement_outputs(session: Session, message: str, added: Optional[bool] = None):
    """The outputs of an add or remove: session, message, summary, the remove list, and (after an add) the name
    field, emptied when the requirement was added and left as typed when it was refused."""
    import gradio as gr

    names = list(session.requirements)
    outputs = (session, message, session.summary(), gr.Dropdown(choices=names, value=None))
    return outputs if added is None else (*outputs, "" if added else gr.skip())


def build_page(scorer: Optional[Scorer], model_line: str):
    """The page's Blocks: the model line, then (with a model) the requirement and scoring sections."""
    import gradio as gr

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(UPLOAD_TTL_S // 4, UPLOAD_TTL_S)) as page:
        gr.Markdown(f"# {TITLE}: image quality under your requirement\n{INTRO}")
        gr.Markdown(model_line if scorer is not None else f"{model_line}\n\n{NO_MODEL}", elem_id="model")
        if scorer is None:
            return page
        gr.Markdown(LIMITS, elem_id="limits")
        session = gr.State(Session())
        examples = {example.name: example for example in scorer.examples()}
        workdir = scorer.workdir

        gr.Markdown("## 1. Set a requirement")
        with gr.Tabs():
            with gr.Tab("Your scored images"):
                with gr.Row():
                    uploads = gr.File(label=f"Prompt images (2 to {MAX_PROMPT_IMAGES}), and optionally a CSV "
                                            f"image,score that fills their scores by file name",
                                      file_count="multiple", height=220, elem_id="prompt-images")
                    table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["html", "str", "str"], type="array",
                                         interactive=True, static_columns=[0, 1], column_count=3, max_height=360,
                                         elem_id="prompt-table", label="Scores: one per image, on your own scale")
                low, high, polarity, name = _scale_and_name("requirement 1", "range")
                add = gr.Button("Add requirement", elem_id="add-requirement")
            with gr.Tab("Prompt file"):
                prompt_file = gr.File(
                    label="A prompt file with its images, or one zip holding them in their folders: a CSV "
                          "(image,score; paths relative to it), the official demo's example.json, or a prompt "
                          "saved with --save_prompt (.pt)", file_count="multiple", elem_id="prompt-file")
                entry = gr.Textbox(label="Entry of a JSON file holding several (Example_id)", elem_id="entry")
                file_low, file_high, file_polarity, file_name = _scale_and_name("the file's name", "file-range")
                add_file = gr.Button("Add requirement from the file", elem_id="add-prompt-file")
            with gr.Tab("Bundled examples"):
                first = next(iter(examples.values()))
                example = gr.Dropdown(list(examples), value=first.name, label="Example requirement",
                                      elem_id="example")
                remark = gr.Markdown(first.remark, elem_id="example-remark")
                gallery = gr.Gallery(_gallery(first), label="Its images and scores", columns=10, height=200,
                                     elem_id="example-images")
                add_example = gr.Button("Add this example", elem_id="add-example")

        req_status = gr.Markdown(elem_id="requirement-status")
        requirements = gr.Markdown(Session().summary(), elem_id="requirements")
        with gr.Row():
            remove = gr.Dropdown([], label="Remove a requirement", allow_custom_value=True, elem_id="remove")
            remove_button = gr.Button("Remove", elem_id="remove-requirement")

        gr.Markdown("## 2. Score images")
        queries = gr.File(label=f"Images to score, or zip archives of images (up to {MAX_SCORE_IMAGES})",
                          file_count="multiple", height=160, elem_id="query-images")
        score_button = gr.Button("Score", variant="primary", elem_id="score")
        score_status = gr.Markdown(elem_id="score-status")
        results = gr.HTML(elem_id="results")
        chart = gr.Plot(label="Scores by requirement", elem_id="chart")
        download = gr.File(label="scores.csv", interactive=False, elem_id="download")

        # ---------------------------------------------------------------- handlers
        def fill_table(files, rows):
            """One row per uploaded prompt image (thumbnail, name, score), scores filled from a CSV uploaded with
            them; what the CSV filled goes to the requirement status line."""
            try:
                return prompt_table(files, rows)
            except Exception as err:   # a bad CSV: the images' rows still, and the CSV's error
                return prompt_table(prompt_images(files), rows)[0], _error(err, {str(f): display_name(f)
                                                                                  for f in files or []})

        def add_from_table(session, name, files, rows, lo, hi, order):
            names, added = {}, False
            try:
                files = prompt_images(files)
                if len(files) < 2:
                    raise UserError(f"upload at least 2 prompt images (got {len(files)}), then type their scores")
                if len(files) > MAX_PROMPT_IMAGES:
                    raise UserError(f"{len(files)} prompt images; at most {MAX_PROMPT_IMAGES} per requirement")
                labels = [display_name(f) for f in files]
                names = {str(f): label for f, label in zip(files, labels)}
                scores = table_scores(rows, labels)
                chosen = session.refuse_taken(_name(name, session))   # before the model spends time on it
                prompt = scorer.encode(files, scores, parse_scale(lo, hi), order == HIGHER)
                message = session.add(Requirement(chosen, prompt, f"{len(files)} uploaded images",
                                                  scorer.check(prompt)))
                added = True
            except Exception as err:
                message = _error(err, names)
            return _requirement_outputs(session, message, added)

        def add_from_file(session, name, files, prompt_id, lo, hi, order):
            folder, names, added = None, {}, False
            try:
                folder = scratch_folder(workdir)
                prompt_path, names = _lay_out(files, folder)
                from promptiqa.prompt_files import is_saved_prompt, read_prompt_pairs

                if is_saved_prompt(prompt_path):
                    prompt = scorer.load_saved(prompt_path)
                    source = f"saved prompt {prompt_path.name}"
                else:
                    pairs = read_prompt_pairs(prompt_path, (prompt_id or "").strip() or None, within=folder)
                    if len(pairs.images) > MAX_PROMPT_IMAGES:
                        raise UserError(f"{prompt_path.name} holds {len(pairs.images)} pairs; at most "
                                        f"{MAX_PROMPT_IMAGES} per requirement")
                    prompt = scorer.encode(pairs.images, pairs.scores, parse_scale(lo, hi) or pairs.score_range,
                                           order == HIGHER)
                    source = f"prompt file {prompt_path.name}"
                message = session.add(Requirement(_name(name, session, prompt_path.stem), prompt, source,
                                                  scorer.check(prompt)))
                added = True
            except Exception as err:
                message = _error(err, names)
            finally:
                remove_tree(folder)
            return _requirement_outputs(session, message, added)

        def add_bundled(session, chosen):
            try:
                if chosen not in examples:
                    raise UserError(f"no bundled example named {chosen!r}; choose one of {', '.join(examples)}")
                ex = examples[session.refuse_taken(chosen)]
                prompt = scorer.encode(ex.images, ex.scores, ex.score_range, ex.higher_is_better)
                message = session.add(Requirement(ex.name, prompt, "bundled example", scorer.check(prompt)))
            except Exception as err:
                message = _error(err)
            return _requirement_outputs(session, message)

        def preview(chosen):
            ex = examples.get(chosen)
            return (ex.remark, _gallery(ex)) if ex else ("", [])

        def remove_requirement(session, chosen):
            if chosen in session.requirements:
                del session.requirements[chosen]
                message = f"Removed requirement **{html.escape(chosen)}**."
            else:
                message = "**Error:** choose a requirement to remove."
            return _requirement_outputs(session, message)

        def score(session, files):
            """The scores of the uploads under every requirement; on an error, its message, and the results already
            on the page stay there."""
            import gradio as gr

            folder, names = None, {}
            try:
                if not session.requirements:
                    raise UserError("add a requirement first (section 1): scores only mean something under one")
                if not files:
                    raise UserError("upload images to score first")
                from promptiqa.data.inputs import IMAGE_SUFFIXES

                folder = scratch_folder(workdir)
                paths, labels, ignored = unpack(files, folder, IMAGE_SUFFIXES, MAX_SCORE_IMAGES)
                names = {str(p): label for p, label in zip(paths, labels)}
                if not paths:
                    raise UserError(f"no images in the upload (zip members need one of the suffixes "
                                    f"{', '.join(IMAGE_SUFFIXES)})")
                res = score_all(scorer, paths, labels, folder, list(session.requirements.values()))
                table_html, figure = res.html(), res.chart()
                csv_path = write_csv(res, workdir)
                note = f" Ignored (not images): {', '.join(ignored[:10])}{' ...' if len(ignored) > 10 else ''}." \
                    if ignored else ""
                if res.skipped:   # the command line's report: a heading, then the files
                    heading, *skipped = res.skipped
                    note += f" **{heading[0].upper()}{heading[1:]}** {', '.join(s.strip() for s in skipped)}."
                n = len(res.names)
                message = (f"Scored {n} image{'s' if n != 1 else ''} under "
                           f"{len(res.requirements)} requirement{'s' if len(res.requirements) != 1 else ''} in "
                           f"{res.seconds:.1f} s.{note}")
                return message, table_html, figure, str(csv_path)
            except Exception as err:
                return _error(err, names), gr.skip(), gr.skip(), gr.skip()
            finally:
                remove_tree(folder)

        requirement_outputs = [session, req_status, requirements, remove]
        uploads.change(fill_table, [uploads, table], [table, req_status], api_name="fill_table")
        add.click(add_from_table, [session, name, uploads, table, low, high, polarity], [*requirement_outputs, name],
                  api_name="add_requirement")
        add_file.click(add_from_file, [session, file_name, prompt_file, entry, file_low, file_high, file_polarity],
                       [*requirement_outputs, file_name], api_name="add_prompt_file")
        example.change(preview, [example], [remark, gallery], api_name="preview_example")
        add_example.click(add_bundled, [session, example], requirement_outputs, api_name="add_example")
        remove_button.click(remove_requirement, [session, remove], requirement_outputs, api_name="remove_requirement")
        score_button.click(score, [session, queries], [score_status, results, chart, download], api_name="score")
    return page


def _scale_and_name(placeholder: str, prefix: str):
    """The score-range, polarity and name inputs of a requirement (an empty range: the scores' own min and max)."""
    import gradio as gr

    with gr.Row():
        low = gr.Textbox(label="Score range: from", placeholder="optional, e.g. 1", elem_id=f"{prefix}-low")
        high = gr.Textbox(label="to", placeholder="e.g. 5", elem_id=f"{prefix}-high")
        polarity = gr.Radio([HIGHER, LOWER], value=HIGHER, label="Scores", elem_id=f"{prefix}-polarity")
        name = gr.Textbox(label="Requirement name", placeholder=placeholder, elem_id=f"{prefix}-name")
    return low, high, polarity, name


def _name(typed: Optional[str], session: Session, fallback: Optional[str] = None) -> str:
    return (typed or "").strip() or fallback or session.next_name()


def _gallery(example) -> List:
    return [(str(path), f"{score:g}") for path, score in zip(example.images, example.scores)]


def _lay_out(files, folder: Path):
    """The uploaded prompt file and its images in one folder (loose files side by side under their own names, zip
    archives unpacked in their folder layout); returns (the prompt file's path there, {server path: shown name})."""
    from promptiqa.data.inputs import IMAGE_SUFFIXES

    files = [Path(f) for f in files or []]
    if not files:
        raise UserError("upload a prompt file (CSV, example.json or a saved .pt) with its images, or a zip of them")
    names = {}
    for f in files:
        if f.suffix.lower() != ".zip":  # side by side, so a prompt file naming images by file name finds them
            target = folder / display_name(f)
            shutil.copyfile(f, target)
            names[str(target)] = display_name(f)
    zips = [f for f in files if f.suffix.lower() == ".zip"]
    unpacked, labels, _ = unpack(zips, folder, PROMPT_SUFFIXES + IMAGE_SUFFIXES, 2 * MAX_PROMPT_IMAGES, layout=True)
    names.update({str(p): label for p, label in zip(unpacked, labels)})
    candidates = [p for p in names if Path(p).suffix.lower() in PROMPT_SUFFIXES]
    if len(candidates) != 1:
        found = ", ".join(names[c] for c in candidates) or "none"
        raise UserError(f"upload exactly one prompt file (.csv, .json or a saved .pt) with its images; found {found}")
    names[str(folder) + os.sep] = ""   # other paths in messages (an image the file names but nobody uploaded)
    return Path(candidates[0]), names


# --------------------------------------------------------------------------------------------------------------
# serving


@contextmanager
def _environment(**values: str):
    """Set environment variables for the duration (gradio reads these when imported and when it starts)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _sigterm_stops_the_server():
    """SIGTERM (a service manager, ``kill``) stops the server as Ctrl-C does, so the temporary folder is removed."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:   # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(scorer_factory, host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    """Build the page with ``scorer_factory(workdir)`` -> (Scorer or None, model line) and serve it until
    interrupted; uploads and generated files live in one temporary folder, removed when the server stops."""
    root = Path(tempfile.mkdtemp(prefix="promptiqa-app-"))
    try:
        # No telemetry or version check (nothing reaches public hosts); uploads go into our temporary folder.
        with _environment(GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(root / "uploads")), \
                _sigterm_stops_the_server():
            scorer, model_line = scorer_factory(root / "work")
            page = build_page(scorer, model_line)
            page.queue(default_concurrency_limit=1)
            _, local_url, share_url = page.launch(
                server_name=host, server_port=port, share=share, max_file_size=f"{MAX_FILE_MB}mb", ssr_mode=False,
                mcp_server=False, show_error=False, css=CSS, quiet=True, prevent_thread_lock=True)
            try:
                print(f"[promptiqa] serving the page on {local_url}" + (f" and {share_url}" if share_url else "")
                      + "; Ctrl-C stops it", file=sys.stderr, flush=True)
                while True:   # until Ctrl-C or SIGTERM (KeyboardInterrupt): the command then exits with 130
                    time.sleep(0.5)
            finally:
                page.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
