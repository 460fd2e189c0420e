"""Parsers of the two AI-generated-image datasets, split by image: AGIQA-3K and AIGCIQA2023."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np

from promptiqa.data.formats.common import DatasetError, load_mat, mat_vector, parse_score, read_csv_rows, record
from promptiqa.data.records import Record


def parse_agiqa_3k(root: Path, key: str, label_norm: str,
                   column: str = "mos_quality") -> Tuple[List[Record], List[str]]:
    """AGIQA-3K: data.csv, columns name and mos_quality (the requirement `align`: mos_align), images in img/."""
    label_path = root / "data.csv"
    # `prompt` holds quoted commas, which the csv module handles and a split(',') would not
    # (docs/datasets.md#agiqa_3k).
    records = [record(root, f"img/{row['name']}", parse_score(row[column], key, label_path, f"line {line}"))
               for line, row in read_csv_rows(label_path, key, ("name", column))]
    return records, []


def parse_aigciqa2023(root: Path, key: str, label_norm: str,
                      column: str = "DATA/MOS/mosz1.mat") -> Tuple[List[Record], List[str]]:
    """AIGCIQA2023: DATA/MOS/mosz1.mat (quality MOSz, n×1; mosz2/mosz3.mat for the requirements authenticity and
    correspondence); image i is Image/allimg/<i>.png."""
    label_path = root.joinpath(*column.split("/"))
    array = np.asarray(load_mat(label_path, key, ("MOSz",))["MOSz"])
    if array.ndim != 2 or array.shape[1] != 1:
        raise DatasetError(key, f"variable 'MOSz' has shape {array.shape}", label_path, expected="shape (2400, 1)")
    scores = mat_vector(array, key, label_path, "MOSz").astype(np.float64)
    # The split index is the file number: no names are stored anywhere, image i simply goes with MOSz[i].
    records = [record(root, f"Image/allimg/{index}.png", parse_score(score, key, label_path, f"MOSz[{index}]"))
               for index, score in enumerate(scores)]
    return records, [f"scores: MOSz of {label_path.name}"]
