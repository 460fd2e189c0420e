"""``promptiqa app``: its options, which model it loads, and the example export. Light to import (``--help``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Tuple

from promptiqa.config import add_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``promptiqa app``."""
    parser.add_argument("--checkpoint", default=None, metavar="FILE|hf:REPO",
                        help="a checkpoint file or hf:REPO[/FILE][@REVISION] (hf:Zevin2023/PromptIQA: the authors' "
                             "release). Default: the demo's model (runs/demo/promptiqa/last.pth.tar) when bash "
                             "scripts/demo.sh has made one, else the released weights when they are in the Hugging "
                             "Face cache; with neither the page opens and says how to get a model")
    parser.add_argument("--backbone", default=None,
                        help="timm backbone of an official-format file that does not record it "
                             "(default vit_base_patch8_224)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0 opens the page to "
                             "the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    add_options(parser, ["device"])
    parser.add_argument("--share", action="store_true",
                        help="also publish the page through a temporary public gradio.live link (off by default: "
                             "nothing leaves this machine)")
    parser.add_argument("--export-examples", "--export_examples", dest="export_examples", metavar="DIR",
                        default=None, help="write the bundled example requirements into DIR as prompt CSVs with "
                                           "their images (at the model's input size) and a README, then exit")


def demo_checkpoint() -> Optional[Path]:
    """Where ``bash scripts/demo.sh`` leaves its prompted model (under the current folder), or None without the
    demo's config (an install without configs/)."""
    from promptiqa.app.service import demo_settings
    from promptiqa.engine.run_folder import LAST

    settings = demo_settings()
    return None if settings is None else Path(settings["save_path"]) / "promptiqa" / LAST


def choose_checkpoint(checkpoint: Optional[str]) -> Optional[Tuple[str, str]]:
    """(checkpoint to load, what it is): the one given, else the demo's model, else the cached release, else None."""
    from promptiqa.hub import RELEASE, cached_release, parse_reference

    if checkpoint:
        ref = parse_reference(checkpoint)
        origin = "the authors' release" if ref is not None and str(ref) == str(parse_reference(RELEASE)) else \
            "from the Hugging Face Hub" if ref is not None else "--checkpoint"
        return checkpoint, origin
    demo = demo_checkpoint()
    if demo is not None and demo.is_file():
        return str(demo), "the demo's prompted model, made by bash scripts/demo.sh"
    if cached_release() is not None:
        return RELEASE, "the authors' release, found in the Hugging Face cache"
    return None


def run(args: argparse.Namespace) -> int:
    """Serve the page (until Ctrl-C or SIGTERM), or with --export-examples write the examples and exit."""
    from promptiqa.devices import resolve_device
    from promptiqa.errors import ConfigError

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: expected a port number, 0 to 65535")
    device = resolve_device(args.device)   # a device this machine lacks is refused before anything loads
    chosen = choose_checkpoint(args.checkpoint)
    if chosen is not None:
        from promptiqa.hub import resolve_checkpoint

        resolve_checkpoint(chosen[0])   # a missing file or an unfetchable hf: name fails here, before anything starts
    if args.export_examples:
        return _export(args, chosen)

    def scorer_factory(workdir: Path):
        from promptiqa.app.service import Scorer, describe_model
        from promptiqa.predict import Predictor

        if chosen is None:
            return None, "**Model:** none."
        reference, origin = chosen
        print(f"[promptiqa] loading {reference} ({origin})", file=sys.stderr)
        predictor = Predictor.from_checkpoint(reference, device=device, backbone=args.backbone)
        scorer = Scorer(predictor, describe_model(predictor, reference, origin), workdir)
        return scorer, scorer.description

    from promptiqa.app.page import serve

    serve(scorer_factory, host=args.host, port=args.port, share=args.share)
    return 0


def _export(args: argparse.Namespace, chosen: Optional[Tuple[str, str]]) -> int:
    from promptiqa.app.examples import write_example_csvs
    from promptiqa.models import PRESETS, load_model

    if chosen is None:
        size, which = PRESETS["official"]["image_size"], "the official model's input size (no model found)"
    else:
        model = load_model(chosen[0], backbone=args.backbone, device="cpu")
        size, which = int(model.image_size), f"the input size of {chosen[0]}"
    written = write_example_csvs(Path(args.export_examples), size)
    print(f"wrote {len(written)} example requirements ({size} px images: {which}) into {args.export_examples}; "
          f"its README.md has each one's remark and command line")
    return 0
