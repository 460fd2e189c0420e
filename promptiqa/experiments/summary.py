"""Summaries over split seeds in the paper's Table 2 layout: median (and mean ± std) SROCC/PLCC per dataset.

Each seed run's metrics.csv (written by training) gives two figures per dataset: the **last** epoch's, and the
**best** epoch's, where "best" is the epoch the official code keeps: the largest SROCC + PLCC summed over the
datasets' *test* splits (earliest on ties). Best figures are therefore selected on the test split and are labelled
so. Runs trained with --val_fraction add a third selection, **best_val**: the epoch the same rule picks on the
validation parts (held out from training), reported by its *test* figures. A seed folder holding one run per dataset (the "w/o mixed training" ablation) selects each run's best epoch
on its own.

Columns are datasets grouped by task (synthetic, authentic, face, AI-generated, underwater, then any other
dataset), each group followed by its average. An average cell is the mean of the row's dataset values, as the
paper averages its columns; its ± is the standard deviation over seeds of the per-seed task average (seeds that
have every dataset of the task). Standard deviations are numpy's (ddof=0).

Beside each median stands the paper's figure and Δ = median − paper (``promptiqa.paper``): Table 2's PromptIQA row,
or Table 6's row for a label that names an ablation variant (wo_prompt, ...); Δ is flagged when larger than the std
over the seeds (one seed: ``paper.TOLERANCE``).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import paper
from ..data.registry import TASKS
from ..errors import run_command
from ..fileio import atomic_write, write_json
from ..evaluation.report import fmt, markdown_table, write_csv, write_lines
# read_seed_run and select_epochs stay importable from here, where they were before the reading moved
from .seed_runs import SELECTIONS, SUMMARY_METRICS, SeedRun, read_group, read_seed_run, select_epochs  # noqa: F401

OTHER = "other"
# The method label (and Table 6 variant) a protocol command gave the runs of a root: every later summary of the root
# uses it, so ten-splits' own summary and a re-run of `summarise` on the same folder label its rows alike.
METHOD_FILE = "method.json"


def task_of(key: str) -> str:
    """The Table 2 group of a dataset key; unknown and custom datasets are "other"."""
    for task, keys in TASKS:
        if key in keys:
            return task
    return OTHER


def column_groups(datasets: Iterable[str]) -> List[Tuple[str, List[str]]]:
    """(task, datasets) in the paper's order, keeping only datasets present; "other" last in first-seen order."""
    present = list(dict.fromkeys(datasets))
    groups = [(task, [k for k in keys if k in present]) for task, keys in TASKS]
    groups.append((OTHER, [k for k in present if task_of(k) == OTHER]))
    return [(task, keys) for task, keys in groups if keys]


# ---------------------------------------------------------------- statistics


@dataclass
class Cell:
    """Statistics over seeds of one figure."""

    values: List[float]
    seeds: List[Optional[int]]
    median: float = float("nan")
    mean: float = float("nan")
    std: float = float("nan")

    def __post_init__(self):
        arr = np.asarray([v for v in self.values if not math.isnan(v)], dtype=np.float64)
        if arr.size:
            self.median, self.mean, self.std = float(np.median(arr)), float(arr.mean()), float(arr.std())

    @property
    def n(self) -> int:
        return sum(not math.isnan(v) for v in self.values)


def average_column(task: str) -> str:
    """The column of a task's average."""
    return f"{task} avg"


@dataclass
class Summary:
    """cells[label][selection][column][metric]; columns are dataset keys and "<task> avg"; paper_rows[label]: the
    paper row (table, row) each label is compared with."""

    labels: List[str]
    groups: List[Tuple[str, List[str]]]
    cells: Dict[str, Dict[str, Dict[str, Dict[str, Cell]]]]
    runs: Dict[str, List[SeedRun]]
    paper_rows: Dict[str, Tuple[str, str]] = field(default_factory=dict)

    @property
    def selections(self) -> List[str]:
        """The SELECTIONS some run has figures for (best_val only with runs trained with --val_fraction)."""
        return [s for s in SELECTIONS if s != "best_val" or
                any(run.values.get(s) for runs in self.runs.values() for run in runs)]

    @property
    def columns(self) -> List[Tuple[str, str]]:
        """(task, column) in table order: each group's datasets, then its average."""
        out = []
        for task, keys in self.groups:
            out += [(task, k) for k in keys] + [(task, average_column(task))]
        return out

    def comparison(self, label: str, selection: str, task: str, column: str, metric: str) -> paper.Comparison:
        """The median of a cell beside the paper's figure, flagged against the std over the seeds."""
        cell = self.cells[label][selection][column][metric]
        dataset = paper.summary_column(task, column, column == average_column(task))
        key = self.paper_rows.get(label) or paper.summary_row(label)
        return paper.Comparison(cell.median, paper.figure(key, dataset, metric), paper.spread_of(cell.n, cell.std))

    def has_paper(self, label: str) -> bool:
        """Whether the paper has a figure for any column of ``label``."""
        return any(self.comparison(label, "last", task, column, metric).paper is not None
                   for task, column in self.columns for metric in SUMMARY_METRICS)


def seed_statistics(groups: Mapping[str, Sequence[SeedRun]],
                    paper_rows: Optional[Mapping[str, Tuple[str, str]]] = None) -> Summary:
    """Medians, means and stds over seeds per (label, selection, dataset, metric), with task averages; each label is
    compared with ``paper_rows[label]`` (default ``paper.summary_row(label)``)."""
    datasets = [d for runs in groups.values() for run in runs for sel in run.values.values() for d in sel]
    layout = column_groups(datasets)
    cells: Dict[str, Dict[str, Dict[str, Dict[str, Cell]]]] = {}
    for label, runs in groups.items():
        cells[label] = {}
        for selection in SELECTIONS:
            table: Dict[str, Dict[str, Cell]] = {}
            for _, keys in layout:
                for key in keys:
                    table[key] = {m: Cell([r.values[selection].get(key, {}).get(m, float("nan")) for r in runs],
                                          [r.seed for r in runs]) for m in SUMMARY_METRICS}
            for task, keys in layout:
                table[average_column(task)] = {m: _average_cell(table, keys, runs, selection, m)
                                                for m in SUMMARY_METRICS}
            cells[label][selection] = table
    rows = {label: (paper_rows or {}).get(label) or paper.summary_row(label) for label in groups}
    return Summary(list(groups), layout, cells, dict(groups), rows)


def _average_cell(table, keys, runs, selection, metric) -> Cell:
    per_seed = []
    for run in runs:
        values = [run.values[selection].get(k, {}).get(metric, float("nan")) for k in keys]
        per_seed.append(float(np.mean(values)) if not any(math.isnan(v) for v in values) else float("nan"))
    cell = Cell(per_seed, [r.seed for r in runs])
    # the paper's reading: the average of the row's shown values
    cell.median = _nanmean([table[k][metric].median for k in keys])
    cell.mean = _nanmean([table[k][metric].mean for k in keys])
    return cell


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float("nan") if np.isnan(arr).all() else float(np.nanmean(arr))


# ---------------------------------------------------------------- outputs


def _paper_cell(comparison: paper.Comparison, what: str) -> Optional[str]:
    return comparison.paper_text() if what == "paper" else comparison.delta_text()


def to_markdown(summary: Summary, title: str = "") -> str:
    """Table 2 layout, one table per selection: rows are (label, statistic, metric), columns datasets by task."""
    lines = [f"# {title}", ""] if title else []
    groups = "; ".join(f"{task}: {', '.join(keys)}" for task, keys in summary.groups)
    lines += [f"Columns by task ({groups}); 'avg' is the mean of the row's dataset values. Medians over seeds, "
              "mean ± std (numpy, ddof=0) below them.", ""]
    compared = [label for label in summary.labels if summary.has_paper(label)]
    if compared:
        sources = "; ".join(f"{label}: {'/'.join(summary.paper_rows[label])}" for label in compared)
        lines += [f"Paper: the published figure of each median ({sources}; – where the paper has none). "
                  f"{paper.rule('seeds')}.", ""]
    columns = summary.columns
    for selection in summary.selections:
        caption = SELECTIONS[selection]
        seeds = {label: [r.seed for r in summary.runs[label]] for label in summary.labels}
        lines += [f"## {caption}", "",
                  "Seeds: " + "; ".join(f"{label}: {len(s)} ({', '.join(map(str, s))})" for label, s in seeds.items()),
                  ""]
        header = ["method", "statistic"] + [c for _, c in columns]
        rows = []
        for label in summary.labels:
            table = summary.cells[label][selection]
            for metric in SUMMARY_METRICS:
                rows.append([label, f"median {metric.upper()}"] + [table[c][metric].median for _, c in columns])
            if label in compared:
                for what in ("paper", "Δ"):
                    for metric in SUMMARY_METRICS:
                        rows.append([label, f"{what} {metric.upper()}"] + [
                            _paper_cell(summary.comparison(label, selection, task, c, metric), what)
                            for task, c in columns])
            for metric in SUMMARY_METRICS:
                rows.append([label, f"mean ± std {metric.upper()}"] +
                            [f"{fmt(table[c][metric].mean)} ± {fmt(table[c][metric].std)}" for _, c in columns])
        lines += [markdown_table(header, rows), ""]
    return "\n".join(lines)


LONG_COLUMNS = ("label", "selection", "task", "dataset", "metric", "median", "mean", "std", "n", "seeds",
                *paper.FIELDS)


def long_rows(summary: Summary) -> List[dict]:
    """One row per (label, selection, column, metric), for summary.csv."""
    rows = []
    for label in summary.labels:
        for selection in summary.selections:
            for task, column in summary.columns:
                for metric in SUMMARY_METRICS:
                    c = summary.cells[label][selection][column][metric]
                    rows.append(dict(label=label, selection=selection, task=task, dataset=column, metric=metric,
                                     median=c.median, mean=c.mean, std=c.std, n=c.n,
                                     seeds=" ".join(str(s) for s, v in zip(c.seeds, c.values) if not math.isnan(v)),
                                     **summary.comparison(label, selection, task, column, metric).fields()))
    return rows


def write_xlsx(summary: Summary, path: Path) -> Path:
    """A sheet per selection in Table 2 layout (task headers merged over their columns; the paper's figures and Δ
    under the medians, flagged Δ cells filled red), and the per-seed values."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill

    book = Workbook()
    book.remove(book.active)
    bold = Font(bold=True)
    flagged = PatternFill("solid", fgColor="F4CCCC")
    for selection in summary.selections:
        caption = SELECTIONS[selection]
        sheet = book.create_sheet(f"{selection} epoch")
        sheet.append([caption])
        columns = summary.columns
        sheet.append(["", ""] + [task for task, _ in columns])
        sheet.append(["method", "statistic"] + [c for _, c in columns])
        start = 3
        for task, keys in summary.groups:   # merge each task's header cells
            width = len(keys) + 1
            sheet.merge_cells(start_row=2, start_column=start, end_row=2, end_column=start + width - 1)
            sheet.cell(row=2, column=start).alignment = Alignment(horizontal="center")
            start += width
        for row in (2, 3):
            for cell in sheet[row]:
                cell.font = bold
        for label in summary.labels:
            table = summary.cells[label][selection]
            for stat in ("median", "paper", "Δ", "mean", "std"):
                if stat in ("paper", "Δ") and not summary.has_paper(label):
                    continue
                for metric in SUMMARY_METRICS:
                    if stat in ("paper", "Δ"):
                        found = [summary.comparison(label, selection, task, c, metric) for task, c in columns]
                        values = [(x.paper.value if x.paper else None) if stat == "paper" else x.delta
                                  for x in found]
                    else:
                        values = [getattr(table[c][metric], stat) for _, c in columns]
                    sheet.append([label, f"{stat} {metric.upper()}"] +
                                 [None if v is None or math.isnan(v) else v for v in values])
                    if stat == "Δ":
                        for cell, x in zip(sheet[sheet.max_row][2:], found):
                            if x.flagged:
                                cell.fill = flagged
        for row in sheet.iter_rows(min_row=4, min_col=3):
            for cell in row:
                cell.number_format = "0.0000"
        if any(summary.has_paper(label) for label in summary.labels):
            sheet.append([])
            sheet.append([f"paper: {paper.rule('seeds')} (flagged Δ cells are filled red)"])
    seeds = book.create_sheet("per seed")
    seeds.append(["label", "selection", "seed", "dataset", "epoch", "srocc", "plcc", "krcc", "rmse", "run"])
    for label in summary.labels:
        for run in summary.runs[label]:
            for selection in summary.selections:
                for key, m in run.values[selection].items():
                    seeds.append([label, selection, run.seed, key, run.epochs[selection][key],
                                  *(None if math.isnan(m[k]) else m[k] for k in ("srocc", "plcc", "krcc", "rmse")),
                                  str(run.path)])
    path = Path(path)
    atomic_write(path, book.save, binary=True)
    return path


def write_summary(summary: Summary, prefix, title: str = "") -> Dict[str, Path]:
    """<prefix>.md, <prefix>.csv and <prefix>.xlsx."""
    prefix = Path(prefix)
    md = write_lines(prefix.with_suffix(".md"), [to_markdown(summary, title)])
    table = write_csv(prefix.with_suffix(".csv"), LONG_COLUMNS, long_rows(summary))
    xlsx = write_xlsx(summary, prefix.with_suffix(".xlsx"))
    return {"markdown": md, "csv": table, "xlsx": xlsx}


def summarise_roots(roots: Mapping[str, Sequence], prefix, title: str = "", partial: bool = False,
                    paper_rows: Optional[Mapping[str, Tuple[str, str]]] = None) -> Summary:
    """Read every label's roots (10-split folders or single runs), compute the statistics over seeds beside the
    paper's figures (``paper_rows[label]``, default by label), write the three files."""
    groups = {}
    for label, paths in roots.items():
        runs = [run for p in paths for run in read_group(p, partial=partial)]
        if not runs:
            warnings.warn(f"{label}: no finished run found in {', '.join(map(str, paths))}")
        groups[label] = runs
    summary = seed_statistics(groups, paper_rows)
    write_summary(summary, prefix, title)
    return summary


def print_summary(summary: Summary, prefix, title: str = "") -> None:
    """The Markdown tables on standard output, and which files hold them."""
    print(to_markdown(summary, title))
    print(f"wrote {prefix}.md, {prefix}.csv, {prefix}.xlsx")


def record_method(root, label: str, variant: Optional[str] = None) -> None:
    """Record in ``root`` the label its runs are summarised under and the Table 6 ``variant`` they are (None: the
    full model); written by the protocol commands before their runs start."""
    write_json(Path(root) / METHOD_FILE, {"method": label, "variant": variant})


def method_of(root) -> Tuple[str, Tuple[str, str]]:
    """The label of ``root``'s runs in a summary and the paper row they are compared with: what a protocol recorded
    in it (or, for one seed_* folder, in the folder above), else the folder's own name however the path is written
    (``runs/x``, ``runs/x/``, ``.`` inside it), compared by that name (a variant's name: its Table 6 row)."""
    root = Path(root).resolve()
    for folder in (root, root.parent) if root.name.startswith("seed_") else (root,):
        try:
            recorded = json.loads((folder / METHOD_FILE).read_text(encoding="utf-8"))
            label, variant = str(recorded["method"]), recorded.get("variant")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return label, paper.summary_row(variant or "full")
    return root.name, paper.summary_row(root.name)


def group_roots(items: Sequence[str]) -> Tuple[Dict[str, List[str]], Dict[str, Tuple[str, str]]]:
    """Row groups from ``items`` (FOLDER, or LABEL=FOLDER): {label: folders} and each label's paper row; a folder
    without a label gets ``method_of``'s."""
    roots: Dict[str, List[str]] = {}
    rows: Dict[str, Tuple[str, str]] = {}
    for item in items:
        label, sep, path = str(item).partition("=")
        if sep:
            row = paper.summary_row(label)
        else:
            path = str(item)
            label, row = method_of(path)
        roots.setdefault(label, []).append(path)
        rows.setdefault(label, row)
    return roots, rows


def build_parser() -> "argparse.ArgumentParser":
    """The summarise command's command line."""
    import argparse

    p = argparse.ArgumentParser(allow_abbrev=False,
                                description="Median (mean ± std) SROCC/PLCC over split seeds, in Table 2 layout "
                                            "(Markdown, CSV, XLSX), from the runs' metrics.csv, beside the paper's "
                                            "figures with Δ = median − paper")
    p.add_argument("roots", nargs="+", help="10-split folders (holding seed_*/) or single run folders; each is a row "
                                            "group, or LABEL=FOLDER. A label (or folder name) naming an ablation "
                                            f"variant ({', '.join(paper.figures.VARIANT_ROWS)}) is compared with its "
                                            "Table 6 row, any other with Table 2's PromptIQA row")
    p.add_argument("--out", default=None, help="output prefix (default <first root>/summary)")
    p.add_argument("--title", default="PromptIQA over split seeds")
    p.add_argument("--partial", action="store_true", help="include unfinished runs at their latest epoch")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """scripts/summarise.py."""
    p = build_parser()
    args = p.parse_args(argv)
    prefix = args.out or str(Path(args.roots[0].partition("=")[2] or args.roots[0]) / "summary")

    def run() -> int:
        roots, rows = group_roots(args.roots)
        print_summary(summarise_roots(roots, prefix, args.title, partial=args.partial, paper_rows=rows), prefix,
                      args.title)
        return 0

    return run_command(run)
