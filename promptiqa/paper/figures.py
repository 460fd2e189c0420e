"""The paper's published figures, and each of ours set beside its paper figure with the difference Δ = ours − paper.

``paper_tables.csv`` (provenance in README.md beside it) holds every figure of the paper's Tables 2–6, one per line:
``table,row,dataset,metric,value``. Every mapping from this project's names (summary labels and ablation variants,
Table 3's methods, ISP strategies and ISPP conditions, task averages, relabelled datasets) to the file's rows is
here, so each command asks one question: which paper figure goes beside this one of ours.

The flag rule: a Δ is flagged when |Δ| is larger than the spread of our figure, the standard deviation (numpy,
ddof=0) over our seeds (or random draws) when there are at least two, else ``TOLERANCE``; a Δ within the paper's
rounding (half its last printed digit) is never flagged. A paper figure given as a set (Table 5's three "random"
rows) is compared as its range: Δ is the distance from ours to the range, 0 inside it.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

from ..errors import ConfigError

PAPER_FILE = Path(__file__).with_name("paper_tables.csv")
COLUMNS = ("table", "row", "dataset", "metric", "value")
TOLERANCE = 0.02          # the spread assumed for one figure (one checkpoint, one seed)
ROUNDING = 0.00005        # half the last digit the paper prints (4 decimals)
FLAG = "!"
# what each command's CSV adds beside a figure of ours (see field_names for a row holding several metrics)
FIELDS = ("paper_row", "paper", "delta", "flag")

Key = Tuple[str, str]     # (table, row) of paper_tables.csv

# ---------------------------------------------------------------- our names -> the paper's rows

TABLE2: Key = ("table2", "promptiqa")
# Table 6's row of each ablation variant (experiments.protocol.VARIANTS); the full model is Table 2's PromptIQA row,
# whose PLCCs Table 6 repeats, and which has the SROCCs and the other datasets too.
VARIANT_ROWS: Dict[str, Key] = {"full": TABLE2, "wo_mixed": ("table6", "wo_mixed_training"),
                                "wo_prompt": ("table6", "wo_prompt"), "wo_scaling": ("table6", "wo_random_scaling"),
                                "wo_flipping": ("table6", "wo_random_flipping"),
                                "wo_both": ("table6", "wo_scaling_and_flipping")}
# Table 2's task averages, by the summary's task name (the paper averages only these two)
TASK_AVERAGES = {"synthetic": "synthetic_average", "authentic": "authentic_average"}
# Table 3's rows by our method: PromptIQA, and our w/o-prompt baselines beside the paper's MoNet baselines (MoNet is
# PromptIQA's image encoder); {training} is sdt (trained on that dataset alone) or mdt (mixed training).
TABLE3_ROWS = {"promptiqa": "promptiqa_{training}_few_shot", "zero_shot": "monet_{training}_zero_shot",
               "fine_tuned": "monet_{training}_ft_few_shot"}
# Table 4's rows by ISP sampling strategy, and the row of the paper's std over its random draws
TABLE4_ROWS = {"interval": "interval", "random": "random_mean"}
TABLE4_RANDOM_STD = "random_std"
# Table 5's rows by ISPP condition; a condition of random perturbations only is compared with the three random rows
TABLE5_ROWS = {"none": "standard", "inverted_scores": "inverted_scores"}
TABLE5_RANDOM = ("random_row1", "random_row2", "random_row3")
RANDOM_PERTURBATIONS = ("random_images", "random_scores")


# ---------------------------------------------------------------- the file


@lru_cache(maxsize=None)
def paper_table(path: Path = PAPER_FILE) -> Dict[Tuple[str, str, str, str], float]:
    """{(table, row, dataset, metric): value} of ``path`` (the shipped paper_tables.csv)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if tuple(header or ()) != COLUMNS:
                raise ConfigError(f"{path}: expected the header {','.join(COLUMNS)}, found {header}")
            table = {}
            for line, row in enumerate(reader, start=2):
                try:
                    table[tuple(row[:4])] = float(row[4])
                except (IndexError, ValueError):
                    raise ConfigError(f"{path}, line {line}: expected {','.join(COLUMNS)} with a number as value, "
                                      f"found {','.join(row)}") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: the paper's figures are missing from this installation") from None
    return table


def paper_value(table: str, row: str, dataset: str, metric: str) -> Optional[float]:
    """The paper's figure for (table, row, dataset, metric), e.g. ("table2", "promptiqa", "live", "srocc"); None where
    the paper has none."""
    return paper_table().get((table, row, dataset, metric.lower()))


# ---------------------------------------------------------------- a paper figure and a comparison


@dataclass(frozen=True)
class PaperFigure:
    """A paper figure: one value (low == high), or the range of a set of rows; with the paper's std where given."""

    source: str                   # "table2/promptiqa", "table5/random_row1..3"
    low: float
    high: float
    std: Optional[float] = None   # Table 4's random sampling: the paper's std over its draws

    @property
    def value(self) -> Optional[float]:
        """The figure, or None for a range."""
        return self.low if self.low == self.high else None

    def text(self) -> str:
        """As a table cell: 0.9359, 0.9179 ± 0.0169, or -0.1346..0.6143 for a set."""
        if self.value is None:
            return f"{self.low:.4f}..{self.high:.4f}"
        return f"{self.low:.4f}" + (f" ± {self.std:.4f}" if self.std is not None else "")

    def csv_value(self):
        """For a CSV: the float, or the range as text."""
        return self.value if self.value is not None else f"{self.low!r}..{self.high!r}"


def figure(key: Optional[Key], dataset: Optional[str], metric: str) -> Optional[PaperFigure]:
    """The paper figure of row ``key`` for ``dataset``/``metric``, or None."""
    if key is None or dataset is None:
        return None
    value = paper_value(key[0], key[1], dataset, metric)
    return None if value is None else PaperFigure(f"{key[0]}/{key[1]}", value, value)


def figure_set(table: str, rows: Sequence[str], dataset: str, metric: str) -> Optional[PaperFigure]:
    """The range of the figures of ``rows`` (compared as a set), or None when any of them is missing."""
    values = [paper_value(table, row, dataset, metric) for row in rows]
    if not values or any(v is None for v in values):
        return None
    prefix = _common_prefix(rows)
    source = f"{table}/{prefix}{rows[0][len(prefix):]}..{rows[-1][len(prefix):]}"
    return PaperFigure(source, min(values), max(values))


def _common_prefix(names: Sequence[str]) -> str:
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    return prefix


@dataclass(frozen=True)
class Comparison:
    """One figure of ours beside the paper's: Δ, and whether it is flagged (see the module's rule)."""

    ours: float
    paper: Optional[PaperFigure]
    spread: Optional[float] = None   # std over our seeds or draws; None for a single figure

    @property
    def delta(self) -> Optional[float]:
        """ours − paper (a range: ours − its nearest end, 0 inside); None without a paper figure or one of ours."""
        if self.paper is None or self.ours is None or math.isnan(self.ours):
            return None
        return self.ours - min(max(self.ours, self.paper.low), self.paper.high)

    @property
    def threshold(self) -> float:
        """The |Δ| above which Δ is flagged."""
        spread = TOLERANCE if self.spread is None or math.isnan(self.spread) else self.spread
        return max(spread, ROUNDING)

    @property
    def flagged(self) -> bool:
        """|Δ| larger than our spread (or the tolerance)."""
        return self.delta is not None and abs(self.delta) > self.threshold

    def paper_text(self) -> Optional[str]:
        """The paper cell of a printed table (None: no figure)."""
        return None if self.paper is None else self.paper.text()

    def delta_text(self) -> Optional[str]:
        """The Δ cell of a printed table: signed, with the flag mark when flagged (None: no Δ)."""
        delta = self.delta
        if delta is None:
            return None
        return f"{delta:+.4f}" + (f" {FLAG}" if self.flagged else "")

    def fields(self, metric: Optional[str] = None) -> dict:
        """``field_names(metric)`` for a CSV row; empty where the paper has no figure (never 0); flag 1 or 0."""
        names = field_names(metric)
        if self.paper is None:
            return dict.fromkeys(names)
        delta = self.delta
        return dict(zip(names, (self.paper.source, self.paper.csv_value(), delta,
                                None if delta is None else int(self.flagged))))


def field_names(metric: Optional[str] = None) -> Tuple[str, ...]:
    """``FIELDS``; for a CSV row holding several metrics, the paper's and Δ named after the one compared
    (paper_plcc, delta_plcc)."""
    return FIELDS if metric is None else ("paper_row", f"paper_{metric}", f"delta_{metric}", "flag")


def spread_of(n: int, std: float) -> Optional[float]:
    """The spread the rule uses for a figure over ``n`` seeds or draws with this std: None (the tolerance) below 2."""
    return std if n >= 2 else None


def rule(spread: str = "seeds") -> str:
    """The flag rule in one sentence, for a table's caption; ``spread``: what our std is over (seeds, draws)."""
    return (f"Δ = ours − paper; {FLAG} marks |Δ| larger than the std over our {spread} (numpy, ddof=0), or than "
            f"{TOLERANCE} for a single figure; a Δ within the paper's rounding (±{ROUNDING:.5f}) is never marked")


# ---------------------------------------------------------------- the rows of each command


def summary_row(label: str) -> Key:
    """The paper row a summary label is compared with: an ablation variant's Table 6 row, else Table 2's PromptIQA."""
    return VARIANT_ROWS.get(label, TABLE2)


def summary_column(task: str, column: str, average: bool) -> Optional[str]:
    """The paper's dataset name of a summary column: the dataset key itself, or a task average's name."""
    return TASK_AVERAGES.get(task) if average else column


def table3_training(trained_on: Iterable[str], source: str) -> Optional[str]:
    """Table 3's training of a checkpoint on ``source``: sdt (that dataset alone), mdt (several, or unrecorded as the
    released checkpoint's mix), None (one other dataset: a cross-dataset figure the paper does not give)."""
    trained_on = sorted(set(trained_on))
    if trained_on == [source]:
        return "sdt"
    return "mdt" if len(trained_on) != 1 else None


def table3_figure(method: str, training: Optional[str], source: str, requirement: str,
                  metric: str = "plcc") -> Optional[PaperFigure]:
    """The paper's Table 3 figure of ``method`` (a TABLE3_ROWS key) on ``source`` relabelled by ``requirement``."""
    if training is None:
        return None
    return figure(("table3", TABLE3_ROWS[method].format(training=training)), f"{source}:{requirement}", metric)


def table4_figure(strategy: str, dataset: str, metric: str) -> Optional[PaperFigure]:
    """Table 4's figure of ISP sampling ``strategy`` (random: the mean, with the paper's std over its draws)."""
    found = figure(("table4", TABLE4_ROWS[strategy]), dataset, metric)
    if found is None or strategy != "random":
        return found
    return PaperFigure(found.source, found.low, found.high, paper_value("table4", TABLE4_RANDOM_STD, dataset, metric))


def table5_figure(condition: str, dataset: str, metric: str) -> Optional[PaperFigure]:
    """Table 5's figure of an ISPP ``condition`` ('none', a perturbation, or several joined with '+'): the random
    rows' range for random perturbations only; None for a condition the paper does not have."""
    parts = set(condition.split("+"))
    if parts <= set(RANDOM_PERTURBATIONS):
        return figure_set("table5", TABLE5_RANDOM, dataset, metric)
    if condition in TABLE5_ROWS:
        return figure(("table5", TABLE5_ROWS[condition]), dataset, metric)
    return None
