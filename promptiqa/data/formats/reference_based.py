"""Parsers of the four synthetic-distortion datasets, split by reference: LIVE, CSIQ, TID2013 and KADID-10k.

Each parser reads only label files and returns records in label-file order with raw scores; reference names are
the stems of the reference images ('bikes', '1600', 'I01'), so they can be had without listing any image folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Tuple

import numpy as np

from promptiqa.data.formats.common import (DatasetError, data_rows, first_existing, load_mat,
                                           mat_strings, mat_vector, parse_int, parse_score, read_csv_rows,
                                           read_sheet_rows, read_text_pairs, record)
from promptiqa.data.records import Record

# LIVE's 982 score entries are the concatenation of these folders' img1..imgN (docs/datasets.md#live); generating the
# names from the counts avoids globbing folders that also hold info.txt and Thumbs.db.
LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
LIVE_ENTRIES = sum(count for _, count in LIVE_FOLDERS)

# CSIQ's workbook names distortions by index; the file-name token is case-mixed (docs/datasets.md#csiq).
CSIQ_TOKENS = {1: "AWGN", 2: "JPEG", 3: "jpeg2000", 4: "fnoise", 5: "BLUR", 6: "contrast"}


def stem(file_name: str) -> str:
    """A reference name from a reference file name: 'bikes.bmp' -> 'bikes'."""
    return os.path.splitext(file_name)[0]


def tid2013_reference(file_name: str) -> str:
    """TID2013's reference id from a file name, case-proof: 'i25.bmp', 'I25.BMP' and 'i25_01_1.bmp' -> 'I25'."""
    return "I" + file_name[1:3]


def live_image_names() -> List[str]:
    """LIVE's 982 image names in the order of the score vectors: jp2k/img1.bmp ... fastfading/img174.bmp."""
    return [f"{folder}/img{number}.bmp" for folder, count in LIVE_FOLDERS for number in range(1, count + 1)]


def parse_live(root: Path, key: str, label_norm: str) -> Tuple[List[Record], List[str]]:
    """LIVE Release 2: score vector + `orgs` from a .mat, reference names from refnames_all.mat; copies dropped."""
    # The official code reads a variable `dmos` from dmos_realigned.mat, which holds only dmos_new
    # (docs/datasets.md#live).
    # Under "official" we read `dmos` from dmos.mat: the only file with that name whose values stay in [0, 1]
    # after (x-1)/100. The paper's min-max rule has no such constraint, so it reads the realigned dmos_new.
    if label_norm == "official":
        file_name, variable, what = "dmos.mat", "dmos", "unrealigned DMOS (`dmos` of dmos.mat)"
    else:
        file_name, variable = "dmos_realigned.mat", "dmos_new"
        what = "realigned DMOS (`dmos_new` of dmos_realigned.mat)"
    score_path = root / file_name
    if not score_path.is_file():
        hint = ("label_norm='official' reads `dmos` from dmos.mat (dmos_realigned.mat has no `dmos`); "
                "label_norm='minmax' reads `dmos_new` from dmos_realigned.mat")
        raise DatasetError(key, f"label file {file_name} not found", score_path, expected=hint)
    content = load_mat(score_path, key, (variable, "orgs"))
    scores = mat_vector(content[variable], key, score_path, variable).astype(np.float64)
    orgs = mat_vector(content["orgs"], key, score_path, "orgs")
    names_path = root / "refnames_all.mat"
    references = mat_strings(load_mat(names_path, key, ("refnames_all",))["refnames_all"], key, names_path,
                             "refnames_all")
    for path, name, length in ((score_path, variable, len(scores)), (score_path, "orgs", len(orgs)),
                               (names_path, "refnames_all", len(references))):
        if length != LIVE_ENTRIES:
            # Third-party re-saves truncate orgs/refnames_all to 779 entries, which breaks the name mapping.
            raise DatasetError(key, f"{name!r} has {length} entries", path,
                               expected=f"{LIVE_ENTRIES} entries (jp2k 227, jpeg 233, wn/gblur/fastfading 174 each)")
    records = [record(root, name, scores[k], stem(references[k]))
               for k, name in enumerate(live_image_names()) if orgs[k] == 0]
    notes = [f"scores: {what}",
             f"{LIVE_ENTRIES - len(records)} reference copies (orgs == 1) are not samples"]
    return records, notes


def _csiq_image_folder(root: Path) -> str:
    """'dst_imgs_all' (the official code's flattened folder) if present, else the distributed 'dst_imgs' tree."""
    if (root / "dst_imgs_all").is_dir() or not (root / "dst_imgs").is_dir():
        return "dst_imgs_all"
    return "dst_imgs"


def _csiq_record(root: Path, folder: str, name: str, score: float, key: str, path: Path, where: str) -> Record:
    fields = name.split(".")
    if len(fields) != 4:
        raise DatasetError(key, f"{where}: image name {name!r} is not <reference>.<type>.<level>.png", path)
    reference, token = fields[0], fields[1]
    # In the distributed tree the type folder is the token in lower case: dst_imgs/awgn/1600.AWGN.1.png.
    relative = f"dst_imgs_all/{name}" if folder == "dst_imgs_all" else f"dst_imgs/{token.lower()}/{name}"
    return record(root, relative, score, reference)


def parse_csiq(root: Path, key: str, label_norm: str) -> Tuple[List[Record], List[str]]:
    """CSIQ: hyperIQA's csiq_label.txt ('<name> <dmos>') or the authors' csiq.DMOS.xlsx, sheet all_by_image."""
    label_path = first_existing(root, ("csiq_label.txt", "csiq.DMOS.xlsx"), key, "label file")
    folder = _csiq_image_folder(root)
    records = []
    if label_path.suffix == ".txt":
        for line, name, value in read_text_pairs(label_path, key, "<image name> <dmos>"):
            score = parse_score(value, key, label_path, f"line {line}")
            records.append(_csiq_record(root, folder, name, score, key, label_path, f"line {line}"))
        return records, [f"labels: {label_path.name}; images: {folder}/"]
    rows = read_sheet_rows(label_path, key, sheet="all_by_image")
    # The header sits at D4, not A1 (docs/datasets.md#csiq): find it by its cells rather than by position.
    header = next((i for i, row in enumerate(rows) if "image" in row and "dmos" in row), None)
    if header is None:
        raise DatasetError(key, "sheet all_by_image has no header row with 'image' and 'dmos'", label_path,
                           expected="columns image, dst_idx, dst_type, dst_lev, dmos_std, dmos")
    columns = {name: rows[header].index(name) for name in ("image", "dst_idx", "dst_lev", "dmos")
               if name in rows[header]}
    if len(columns) != 4:
        raise DatasetError(key, f"sheet all_by_image header is {rows[header]}", label_path,
                           expected="columns image, dst_idx, dst_lev and dmos")
    width = max(columns.values()) + 1
    for row_number, cells in data_rows(rows, key, label_path, header, width):
        where = f"row {row_number}"
        index = parse_int(cells[columns["dst_idx"]], key, label_path, where)
        if index not in CSIQ_TOKENS:
            raise DatasetError(key, f"{where}: dst_idx {index} is not 1..6", label_path)
        level = parse_int(cells[columns["dst_lev"]], key, label_path, where)
        image = cells[columns["image"]]
        image = str(int(image)) if isinstance(image, (int, float)) else str(image).strip()  # '1600' is stored as int
        name = f"{image}.{CSIQ_TOKENS[index]}.{level}.png"
        score = parse_score(cells[columns["dmos"]], key, label_path, where)
        records.append(_csiq_record(root, folder, name, score, key, label_path, where))
    return records, [f"labels: {label_path.name} (sheet all_by_image order); images: {folder}/"]


def parse_tid2013(root: Path, key: str, label_norm: str) -> Tuple[List[Record], List[str]]:
    """TID2013: mos_with_names.txt, '<mos> <name>' (score first, the reverse of CSIQ), 3000 lines."""
    label_path = root / "mos_with_names.txt"
    records = []
    for line, value, name in read_text_pairs(label_path, key, "<mos> <image name>"):
        score = parse_score(value, key, label_path, f"line {line}")
        if not re.fullmatch(r"[Ii]\d\d_\d\d_\d\.\w+", name):
            raise DatasetError(key, f"line {line}: image name {name!r} is not iRR_TT_L.bmp", label_path,
                               expected="'<mos> <name>' lines, score first")
        # The names' case is inconsistent (I01_01_1.bmp, i01_01_2.bmp, I01_11_1.BMP): the reference id ignores it,
        # and locate_images matches the file case-insensitively.
        records.append(record(root, f"distorted_images/{name}", score, tid2013_reference(name)))
    return records, []


def parse_kadid(root: Path, key: str, label_norm: str) -> Tuple[List[Record], List[str]]:
    """KADID-10k: dmos.csv with dist_img and dmos (a higher-is-better MOS despite its name), in file order."""
    label_path = root / "dmos.csv"
    records = []
    for line, row in read_csv_rows(label_path, key, ("dist_img", "dmos")):
        name = row["dist_img"]
        match = re.fullmatch(r"([Ii]\d+)_\d+_\d+\.\w+", name)
        if match is None:
            raise DatasetError(key, f"line {line}: dist_img {name!r} is not IRR_TT_LL.png", label_path)
        score = parse_score(row["dmos"], key, label_path, f"line {line}")
        # The official reference index is the number after the leading I (I01..I81), read from dist_img.
        records.append(record(root, f"images/{name}", score, match.group(1).upper()))
    return records, []


# The reference image name -> reference id rule of the datasets whose reference folder (the registry's
# DatasetSpec.reference_folder) holds only references: that folder is checked against the label files when images
# are; the official code lists it to enumerate references (in os.listdir order). KADID's folder holds its distorted
# images too.
REFERENCE_NAMES = {
    "live": stem,
    "csiq": stem,
    # Compare the extension case-insensitively and keep nothing else: the official substring test also accepts
    # extensionless files, which would corrupt the reference list (docs/datasets.md#tid2013).
    "tid2013": tid2013_reference,
}
