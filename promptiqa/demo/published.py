"""The demo's published figures: their range over seeds, and whether a new run's figures fall inside it.

Training a small model from scratch on a CPU goes where floating-point rounding takes it, and rounding differs
between CPUs (AVX2 and AVX-512 kernels sum in other orders), so one seed's figures do not carry over to another
machine. configs/demo.yaml's ``published`` section holds each figure's minimum, median and maximum over the seeds
the README reports; every demo run prints, for each figure, whether it falls inside that range.

    python -m promptiqa.demo.published runs/demo_s2024 runs/demo_s2025 runs/demo_s2026

prints the ``published`` section (YAML) and the README's table for the runs given (their ``results.json``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import yaml

from ..entry import program
from ..errors import ConfigError, run_command

MODEL_KEYS = {"promptiqa": "PromptIQA", "promptiqa_wo_prompt": "w/o prompt"}
DECIMALS = 3    # figures are published, and compared, at the precision the demo prints them


def figures(summary: Mapping) -> Dict[str, float]:
    """The figures of one run's results.json: per model, each requirement's SROCC on its own held-out set
    (``MODEL/REQ``) and over every held-out image (``MODEL/REQ/all``), and the prompt effect."""
    out: Dict[str, float] = {}
    prefix = "demo_"
    for model, result in summary["models"].items():
        for key, req in result["requirements"].items():
            name = key[len(prefix):] if key.startswith(prefix) else key
            out[f"{model}/{name}"] = float(req["metrics"]["srocc"])
            out[f"{model}/{name}/all"] = float(req["srocc_pool"])
        out[f"{model}/prompt_effect"] = float(result["prompt_effect"])
    return out


def ranges(summaries: Sequence[Mapping]) -> Dict[str, List[float]]:
    """Each figure's [minimum, median, maximum] over runs, rounded as the demo prints them; only figures every
    run has (a run without the baseline leaves the baseline's out)."""
    per_run = [figures(s) for s in summaries]
    if not per_run:
        raise ConfigError("no runs given")
    names = [n for n in per_run[0] if all(n in f for f in per_run)]
    return {n: [round(v, DECIMALS) for v in (min(vals), statistics.median(vals), max(vals))]
            for n in names for vals in [[f[n] for f in per_run]]}


def compare(summary: Mapping, published: Optional[Mapping]) -> List[dict]:
    """For each figure of ``summary`` with a published range: its value, the range, and whether it falls inside
    (compared at the published precision, so the published runs themselves fall inside)."""
    if not published:
        return []
    bounds = published.get("figures", {})
    out = []
    for name, value in figures(summary).items():
        if name in bounds:
            low, median, high = bounds[name]
            out.append(dict(figure=name, value=value, min=low, median=median, max=high,
                            inside=bool(low <= round(value, DECIMALS) <= high)))
    return out


def check(published: Optional[Mapping]) -> None:
    """Refuse a malformed ``published`` section, naming what is wrong."""
    if published is None:
        return
    if not isinstance(published, Mapping) or not isinstance(published.get("figures"), Mapping) \
            or not published.get("seeds"):
        raise ConfigError("published must hold seeds (a list) and figures (FIGURE: [min, median, max])")
    for name, bounds in published["figures"].items():
        if not (isinstance(bounds, list) and len(bounds) == 3 and bounds[0] <= bounds[1] <= bounds[2]):
            raise ConfigError(f"published figure {name}: expected [min, median, max] in increasing order, got "
                             f"{bounds!r}")


def readme_table(published: Mapping, requirements: Sequence[str], unseen: Sequence[str],
                 mirror: Sequence[str]) -> str:
    """The README's table of the published figures: median [min, max] per requirement and model."""
    f = published["figures"]

    def cell(name: str) -> str:
        if name not in f:
            return ""
        low, median, high = (_signed(v) for v in f[name])
        return f"{median} [{low}, {high}]"

    lines = ["| requirement | PromptIQA SROCC, own held-out set | (all held-out) | w/o prompt SROCC | (all held-out) |",
             "| --- | --- | --- | --- | --- |"]
    for req in requirements:
        label = f"`{req}` (unseen)" if req in unseen else f"`{req}`"
        lines.append(f"| {label} | {cell(f'promptiqa/{req}')} | {cell(f'promptiqa/{req}/all')} | "
                     f"{cell(f'promptiqa_wo_prompt/{req}')} | {cell(f'promptiqa_wo_prompt/{req}/all')} |")
    lines.append(f"| prompt effect (`{mirror[0]}` vs `{mirror[1]}` prompt) | {cell('promptiqa/prompt_effect')} | | "
                 f"{cell('promptiqa_wo_prompt/prompt_effect')} | |")
    return "\n".join(lines)


def _signed(value: float) -> str:
    """A figure as the README prints it: three decimals, a true minus sign."""
    return f"{value:.{DECIMALS}f}".replace("-", "\u2212")


def build_parser() -> argparse.ArgumentParser:
    """python -m promptiqa.demo.published's command line."""
    p = argparse.ArgumentParser(allow_abbrev=False,
                                prog=program("python -m promptiqa.demo.published"), description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="demo output folders (each holding results.json), one per seed")
    p.add_argument("--machine", default="", help="the machine the runs were made on, recorded with the figures")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the ``published`` section and the README's table for the runs on the command line (-> exit code)."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: _publish(args))


def _publish(args: argparse.Namespace) -> int:
    summaries = []
    for run in args.runs:
        path = Path(run) / "results.json"
        if not path.is_file():
            raise ConfigError(f"{path}: no results.json (expected a finished demo run's output folder)")
        summaries.append(json.loads(path.read_text()))
    seeds = [s["config"]["train"].get("seed") for s in summaries]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"the runs must differ in seed, got seeds {seeds}")
    published = {"seeds": seeds, "machine": args.machine, "figures": ranges(summaries)}
    cfg = summaries[0]["config"]
    print(yaml.safe_dump({"published": published}, sort_keys=False, default_flow_style=None, width=120))
    print(readme_table(published, list(cfg["train_requirements"]) +
                       [r for r in cfg["unseen_requirements"] if r not in cfg["train_requirements"]],
                       cfg["unseen_requirements"], cfg["mirror"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
