"""The `csv` kind: a user's own dataset as one label file with columns image, score and optionally reference."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from promptiqa.data.formats.common import DatasetError, canonical_name, parse_score, read_csv_rows, record
from promptiqa.data.records import REQUIREMENT_SEPARATOR, Record, image_set


# The csv kind's columns: every other column is another score column, a requirement (`name:column`).
CSV_COLUMNS = ("image", "score", "reference")
SCORE_COLUMN = CSV_COLUMNS[1]


def parse_csv_kind(label_path: Path, key: str, column: str = SCORE_COLUMN) -> Tuple[List[Record], bool]:
    """Records from a user label file (image paths relative to it), scored by ``column`` (`score`, or another score
    column: a requirement), and whether it has a reference column."""
    rows = read_csv_rows(label_path, key, CSV_COLUMNS[:2])
    columns = list(rows[0][1])
    if column not in columns or column in (CSV_COLUMNS[0], CSV_COLUMNS[2]):
        name = image_set(key)
        others = [f"{name}{REQUIREMENT_SEPARATOR}{c}" for c in columns if c not in CSV_COLUMNS]
        raise DatasetError(key, f"unknown requirement {column!r}: the label file has no such score column", label_path,
                           expected=f"one of {', '.join([name] + others)} (its columns: {', '.join(columns)})")
    if column != SCORE_COLUMN:
        rows = read_csv_rows(label_path, key, (*CSV_COLUMNS[:2], column))   # an empty cell is an error there too
    has_reference = CSV_COLUMNS[2] in rows[0][1]
    root = label_path.parent
    records = []
    for line, row in rows:
        reference = None
        if has_reference:
            reference = row["reference"]
            if not reference:
                # A partly filled column would silently put some images' references in both splits.
                raise DatasetError(key, f"line {line}: the reference column is empty", label_path,
                                   expected="a reference for every row, or no reference column at all")
        name = canonical_name(row["image"])
        records.append(record(root, name, parse_score(row[column], key, label_path, f"line {line}"), reference))
    return records, has_reference
