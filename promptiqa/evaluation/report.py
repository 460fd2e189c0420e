"""Writing evaluation results: printed tables, CSV files at full precision, Markdown, scatter and line plots."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from ..fileio import atomic_write_text, new_figure, save_figure
from ..fileio import write_csv as write_rows

RESULTS_COLUMNS = ("dataset", "srocc", "plcc", "krcc", "rmse", "n")
PREDICTIONS_COLUMNS = ("dataset", "image", "gt", "pred")


def full(value):
    """A value for CSV: floats at full precision (repr), everything else as is."""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return "" if value is None else value


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping]) -> Path:
    """Rows (mappings) under ``columns``, floats written with repr; atomically (no half file, ever)."""
    return write_rows(path, columns, ([full(row.get(c)) for c in columns] for row in rows))


def fmt(value, digits: int = 4) -> str:
    """A number for a printed or Markdown table; NaN and missing values as '–'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    return str(value)


def text_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A plain aligned table for the terminal."""
    cells = [[str(c) for c in columns]] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub Markdown table (numbers to 4 decimals)."""
    out = ["| " + " | ".join(map(str, columns)) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def plot_scatter(panels: Mapping[str, Mapping[str, np.ndarray]], path: Path) -> Optional[Path]:
    """Prediction vs ground truth, one panel per dataset (``panels[key] = {"gt", "pred", "srocc", "plcc"}``)."""
    if not panels:
        return None
    n = len(panels)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = new_figure(figsize=(3.6 * cols, 3.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (key, p) in zip(axes.flat, panels.items()):
        gt, pred = np.asarray(p["gt"]), np.asarray(p["pred"])
        ax.scatter(gt, pred, s=6, alpha=0.6)
        low = float(np.nanmin(np.concatenate([gt, pred]))) if gt.size else 0.0
        high = float(np.nanmax(np.concatenate([gt, pred]))) if gt.size else 1.0
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8, linestyle="--")
        ax.set(title=f"{key}  SROCC {fmt(p.get('srocc'))}  PLCC {fmt(p.get('plcc'))}", xlabel="ground truth",
               ylabel="prediction")
        ax.title.set_fontsize(8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi=110)
    return path


def plot_lines(x: Sequence, series: Mapping[str, Mapping[str, Sequence[float]]], path: Path, xlabel: str,
               title: str = "") -> Path:
    """One panel per metric (``series[metric][label] = values over x``), one line per label."""
    fig = new_figure(figsize=(5 * len(series), 3.8))
    axes = fig.subplots(1, len(series), squeeze=False)
    for ax, (metric, lines) in zip(axes[0], series.items()):
        for label, values in lines.items():
            ax.plot(list(x), list(values), marker="o", label=label)
        ax.set(xlabel=xlabel, ylabel=metric.upper(), title=f"{title} {metric.upper()}".strip())
        ax.set_xticks(list(x))
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi=110)
    return path


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """Mean and standard deviation (numpy's, ddof=0) ignoring NaN; NaN for an empty list."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": float(arr.mean()), "std": float(arr.std())}


def pm(mean: float, std: float) -> str:
    """'mean ± std' for a table cell."""
    return f"{fmt(mean)} ± {fmt(std)}"


def write_lines(path: Path, lines: List[str]) -> Path:
    """``lines`` as a text file, atomically."""
    path = Path(path)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
