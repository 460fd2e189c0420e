"""The `csv` kind: a user's own dataset as one label file with columns image, score and optionally reference."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from promptiqa.data.formats.common import DatasetError, canonical_name, parse_score, read_csv_rows, record
from promptiqa.data.records import Record


def parse_csv_kind(label_path: Path, key: str) -> Tuple[List[Record], bool]:
    """Records from a user label file (image paths relative to it) and whether it has a reference column."""
    rows = read_csv_rows(label_path, key, ("image", "score"))
    has_reference = "reference" in rows[0][1]
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
        records.append(record(root, name, parse_score(row["score"], key, label_path, f"line {line}"), reference))
    return records, has_reference
