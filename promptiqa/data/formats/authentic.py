"""Parsers of the six authentic-distortion datasets, split by image: BID, SPAQ, LIVEC, KonIQ-10k, GFIQA-20k, UWIQA.

Each parser reads only label files and returns records in label-file order, which is the order the official code
indexes them by (split index i = i-th data row).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from promptiqa.data.formats.common import (DatasetError, check_header, data_rows, first_existing, load_mat,
                                           mat_strings, mat_vector, parse_int, parse_score, read_csv_rows,
                                           read_sheet_rows, record)
from promptiqa.data.records import Record

# The first 7 entries of the .mat files are the images the raters trained on (docs/datasets.md#livec).
LIVEC_TRAINING_ENTRIES = 7


def parse_bid(root: Path, key: str, label_norm: str) -> Tuple[List[Record], List[str]]:
    """BID: DatabaseGrades.xls (as shipped) or .xlsx (as the official code expects), images next to it."""
    label_path = first_existing(root, ("DatabaseGrades.xlsx", "DatabaseGrades.xls"), key, "label workbook")
    rows = read_sheet_rows(label_path, key)
    check_header(rows[0] if rows else (), ("Image Number", "Average Subjective Grade"), key, label_path, "row 1")
    records = []
    for row_number, (number, grade) in data_rows(rows, key, label_path, 0, 2):
        where = f"row {row_number}"
        # Image numbers are stored as floats (1.0); numbers 2, 346, 413 and 439 do not exist (docs/datasets.md#bid).
        name = "DatabaseImage%04d.JPG" % parse_int(number, key, label_path, where)
        records.append(record(root, name, parse_score(grade, key, label_path, where)))
    return records, [f"labels: {label_path.name}"]


def parse_spaq(root: Path, key: str, label_norm: str, column: str = "MOS") -> Tuple[List[Record], List[str]]:
    """SPAQ: Annotations/MOS and Image attribute scores.xlsx (or the underscored name), columns 1-2 (Image name, MOS);
    `column` names another header of the workbook (the attribute requirements, e.g. Sharpness)."""
    label_path = first_existing(root, ("Annotations/MOS_and_Image_attribute_scores.xlsx",
                                       "Annotations/MOS and Image attribute scores.xlsx"), key, "MOS workbook")
    # The official code reads a pre-resized copy img_resize/ that SPAQ does not ship (docs/datasets.md#spaq); fall
    # back to the distributed TestImage/ so a fresh download works. Labels do not depend on which one is used.
    folder = "img_resize" if (root / "img_resize").is_dir() or not (root / "TestImage").is_dir() else "TestImage"
    rows = read_sheet_rows(label_path, key)
    header = rows[0] if rows else ()
    check_header(header, ("Image name", "MOS"), key, label_path, "row 1")
    headers = [str(cell).strip().lower() if cell is not None else "" for cell in header]
    if column.lower() not in headers:
        raise DatasetError(key, f"row 1 header is {list(header)}, without {column!r}", label_path,
                           expected=f"a column {column!r} (the SPAQ workbook's Image name, MOS, Brightness, "
                                    f"Colorfulness, Contrast, Noisiness, Sharpness)")
    at = headers.index(column.lower())
    records = []
    for row_number, cells in data_rows(rows, key, label_path, 0, at + 1):
        score = parse_score(cells[at], key, label_path, f"row {row_number}")
        records.append(record(root, f"{folder}/{str(cells[0]).strip()}", score))
    return records, [f"labels: {label_path.name}" + (f", column {header[at]}" if at != 1 else "")
                     + f"; images: {folder}/"]


def parse_livec(root: Path, key: str, label_norm: str) -> Tuple[List[Record], List[str]]:
    """LIVE Challenge: Data/AllImages_release.mat (names) + Data/AllMOS_release.mat; the 7 training images dropped."""
    names_path, mos_path = root / "Data" / "AllImages_release.mat", root / "Data" / "AllMOS_release.mat"
    names = mat_strings(load_mat(names_path, key, ("AllImages_release",))["AllImages_release"], key, names_path,
                        "AllImages_release")
    scores = mat_vector(load_mat(mos_path, key, ("AllMOS_release",))["AllMOS_release"], key, mos_path,
                        "AllMOS_release").astype(np.float64)
    if len(names) != len(scores):
        raise DatasetError(key, f"AllImages_release has {len(names)} entries but AllMOS_release has {len(scores)}",
                           mos_path, expected="one MOS per image name (1169 each)")
    if len(names) <= LIVEC_TRAINING_ENTRIES:
        raise DatasetError(key, f"AllImages_release has only {len(names)} entries", names_path,
                           expected=f"the {LIVEC_TRAINING_ENTRIES} training images followed by the test images")
    records = [record(root, f"Images/{name}", score)
               for name, score in zip(names[LIVEC_TRAINING_ENTRIES:], scores[LIVEC_TRAINING_ENTRIES:])]
    return records, [f"the first {LIVEC_TRAINING_ENTRIES} entries (training images) are excluded"]


def parse_koniq10k(root: Path, key: str, label_norm: str) -> Tuple[List[Record], List[str]]:
    """KonIQ-10k: koniq10k_distributions_sets.csv (root or metadata/), columns image_name and MOS (1-100 scale)."""
    label_path = first_existing(root, ("koniq10k_distributions_sets.csv", "metadata/koniq10k_distributions_sets.csv"),
                                key, "label file")
    # The `set` column (training/validation/test) is ignored, as in the official code: the split is 80/20 random.
    records = [record(root, f"1024x768/{row['image_name']}", parse_score(row["MOS"], key, label_path, f"line {line}"))
               for line, row in read_csv_rows(label_path, key, ("image_name", "MOS"))]
    return records, [f"labels: {label_path.relative_to(root).as_posix()}"]


def parse_gfiqa_20k(root: Path, key: str, label_norm: str,
                    label_file: Optional[str] = None) -> Tuple[List[Record], List[str]]:
    """GFIQA-20k: a CSV with img_name and mos (official name mos.csv, configurable), images in image/."""
    # The official code reads mos.csv, a name the release does not use (docs/datasets.md#gfiqa_20k); third-party code
    # knows it as mos_val_rating.csv.
    candidates = (label_file,) if label_file else ("mos.csv", "mos_val_rating.csv")
    label_path = first_existing(root, candidates, key, "label file")
    records = [record(root, f"image/{row['img_name']}", parse_score(row["mos"], key, label_path, f"line {line}"))
               for line, row in read_csv_rows(label_path, key, ("img_name", "mos"))]
    return records, [f"labels: {label_path.name}"]


def parse_uwiqa(root: Path, key: str, label_norm: str) -> Tuple[List[Record], List[str]]:
    """UWIQA: IQA_Value.xlsx, a header row then (image number, MOS); images img/0001.png ..."""
    label_path = root / "IQA_Value.xlsx"
    rows = read_sheet_rows(label_path, key)
    records = []
    # No public copy of this workbook exists, so its header text is not checked, only its two columns' values.
    for row_number, (number, mos) in data_rows(rows, key, label_path, 0, 2):
        where = f"row {row_number}"
        name = "img/%04d.png" % parse_int(number, key, label_path, where)
        records.append(record(root, name, parse_score(mos, key, label_path, where)))
    return records, []
