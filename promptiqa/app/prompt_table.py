"""The page's inputs of a requirement: the prompt table (thumbnail, file name, score; filled from a CSV uploaded with
the images) and the score range, read into what ``Predictor.set_prompt`` takes."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from promptiqa.app.service import UserError, display_name, thumbnail


def parse_scale(low, high) -> Optional[Tuple[float, float]]:
    """The score range typed in the page (both ends, or neither)."""
    given = [v for v in (low, high) if v is not None and str(v).strip() != ""]
    if not given:
        return None
    if len(given) == 1:
        raise UserError("give both ends of the score range, or neither (then the scores' own min and max are used)")
    try:
        return float(low), float(high)
    except (TypeError, ValueError):
        raise UserError(f"the score range ({low!r}, {high!r}) is not two numbers") from None


TABLE_HEADERS = ["image", "file", "score"]   # the prompt table's columns: a thumbnail, the file name, the score
NAME, SCORE = 1, 2
THUMBNAIL_PX = 48


def prompt_images(uploads: Sequence) -> List[Path]:
    """The prompt images among the uploads of the "your scored images" tab (all but a CSV of their scores)."""
    return [Path(f) for f in uploads or [] if Path(f).suffix.lower() != ".csv"]


def prompt_table(uploads: Sequence, rows: Sequence[Sequence]) -> Tuple[List[List[str]], str]:
    """The prompt table for the uploads: a row per image (thumbnail, file name, score) keeping scores typed for the
    same file names, those of a CSV ``image,score`` uploaded with them filled in by file name; and a line saying what
    the CSV filled and which of its images match no upload (empty without a CSV)."""
    from promptiqa.prompt_files import read_prompt_rows

    images = prompt_images(uploads)
    names = [display_name(f) for f in images]
    scores = {str(r[NAME]): r[SCORE] for r in rows or [] if len(r) > SCORE}
    csvs = [Path(f) for f in uploads or [] if Path(f).suffix.lower() == ".csv"]
    if len(csvs) > 1:
        raise UserError(f"{len(csvs)} CSV files uploaded ({', '.join(map(display_name, csvs))}); one holds the scores")
    message = ""
    if csvs:
        filled, unknown = set(), []
        for image, score, _ in read_prompt_rows(csvs[0]):
            name = Path(str(image or "").strip()).name   # by file name: the CSV's paths are its own folder's
            if name in names:
                scores[name] = f"{score:g}" if float(f"{score:g}") == score else repr(score)
                filled.add(name)
            else:
                unknown.append(str(image or "").strip())
        message = f"Filled {len(filled)} of {len(names)} scores from {display_name(csvs[0])}."
        if unknown:
            message += f" **Not among the uploaded images:** {_listed(unknown)}."
        if len(filled) < len(names):
            message += f" No score in it for {_listed([n for n in names if n not in filled])}: type those."
    return [[thumbnail(f, THUMBNAIL_PX), name, scores.get(name, "")] for f, name in zip(images, names)], message


def _listed(names: Sequence[str], most: int = 10) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def table_scores(rows: Sequence[Sequence], names: Sequence[str]) -> List[float]:
    """The scores typed in the page's table, one per uploaded image, in upload order."""
    rows = [list(r) for r in (rows or []) if any(str(c).strip() for c in r)]
    if len(rows) != len(names):
        raise UserError(f"the table has {len(rows)} rows for {len(names)} uploaded images: upload the images first, "
                        f"then type one score per row")
    scores = []
    for i, (row, name) in enumerate(zip(rows, names), start=1):
        if len(row) <= SCORE or str(row[NAME]) != name:
            raise UserError(f"row {i} names {row[NAME] if len(row) > NAME else None!r} but image {i} is {name!r}: "
                            f"upload the images again")
        value = str(row[SCORE] if row[SCORE] is not None else "").strip()
        if not value:
            raise UserError(f"row {i} ({name}): no score; type one for every image")
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"row {i} ({name}): score {value!r} is not a number") from None
        if not np.isfinite(number):
            raise UserError(f"row {i} ({name}): score {value!r} is not a finite number")
        scores.append(number)
    return scores
