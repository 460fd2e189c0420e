"""What every dataset parser shares: the error type, readers for the label-file formats, and name resolution."""
from __future__ import annotations

import csv
import hashlib
import math
import os
import posixpath
import re
import stat
import unicodedata
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from promptiqa.data.records import Record
from promptiqa.errors import PromptIQAError


class DatasetError(PromptIQAError, ValueError):
    """A dataset cannot be used as given; the message names the dataset, the path and what was expected."""

    def __init__(self, dataset: str, problem: str, path=None, expected: Optional[str] = None):
        self.dataset, self.problem, self.expected = dataset, problem, expected
        self.path = None if path is None or str(path) == "" else str(path)
        message = f"[{dataset}] {problem}"
        if self.path is not None:
            message += f": {self.path}"
        if expected:
            message += f" (expected {expected})"
        super().__init__(message)


# ---------------------------------------------------------------- label files

def first_existing(root: Path, candidates: Sequence[str], key: str, what: str) -> Path:
    """The first of `candidates` (paths relative to root) that exists, or a DatasetError listing them all."""
    for name in candidates:
        if (root / name).is_file():
            return root / name
    raise DatasetError(key, f"{what} not found in the dataset root", root,
                       expected=" or ".join(repr(name) for name in candidates))


def parse_score(value, key: str, path: Path, where: str) -> float:
    """A finite float from a label-file cell, or a DatasetError saying where the bad value is."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score):
        raise DatasetError(key, f"{where}: score {value!r} is not a finite number", path, expected="a numeric score")
    return score


def parse_int(value, key: str, path: Path, where: str) -> int:
    """An integer from a cell that may hold 12, 12.0 or '12' (BID stores image numbers as floats)."""
    number = parse_score(value, key, path, where)
    if number != int(number):
        raise DatasetError(key, f"{where}: {value!r} is not a whole number", path, expected="an integer image number")
    return int(number)


def read_csv_rows(path: Path, key: str, required: Sequence[str]) -> List[Tuple[int, Dict[str, str]]]:
    """(line number, row) pairs of a headed CSV; a DatasetError when a required column is missing or a cell is empty."""
    if not path.is_file():
        raise DatasetError(key, "label file not found", path, expected=f"a CSV with columns {', '.join(required)}")
    try:
        return _read_csv_rows(path, key, required)
    except (UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(key, f"label file is not a UTF-8 text CSV ({error})", path,
                           expected="text saved as UTF-8, e.g. 'CSV UTF-8' in a spreadsheet program") from None


def _read_csv_rows(path: Path, key: str, required: Sequence[str]) -> List[Tuple[int, Dict[str, str]]]:
    # utf-8-sig: spreadsheet exports often start with a byte-order mark that would corrupt the first column name.
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in (reader.fieldnames or [])]
        missing = [name for name in required if name not in columns]
        if missing:
            raise DatasetError(key, f"label file has columns {columns}, missing {missing}", path,
                               expected=f"a header with columns {', '.join(required)}")
        reader.fieldnames = columns
        rows = []
        for row in reader:
            line = reader.line_num
            if all(not (value or "").strip() for value in row.values() if isinstance(value, str)):
                continue  # a blank line, e.g. a trailing newline written by a spreadsheet program
            for name in required:
                if not (row.get(name) or "").strip():
                    raise DatasetError(key, f"line {line}: column {name!r} is empty", path,
                                       expected=f"a value in every {', '.join(required)} cell")
            rows.append((line, {name: (value or "").strip() for name, value in row.items() if name is not None}))
    if not rows:
        raise DatasetError(key, "label file has a header but no rows", path, expected="one row per image")
    return rows


def read_text_pairs(path: Path, key: str, layout: str) -> List[Tuple[int, str, str]]:
    """(line number, field 1, field 2) of a whitespace-separated two-column text file; other shapes are errors."""
    if not path.is_file():
        raise DatasetError(key, "label file not found", path, expected=f"lines of '{layout}'")
    rows = []
    # TID2013's file has CRLF line endings (docs/datasets.md#tid2013); split() drops the '\r'.
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise DatasetError(key, f"line {line_number} has {len(fields)} fields: {line.strip()!r}", path,
                                   expected=f"exactly two fields per line, '{layout}'")
            rows.append((line_number, fields[0], fields[1]))
    if not rows:
        raise DatasetError(key, "label file is empty", path, expected=f"lines of '{layout}'")
    return rows


def read_sheet_rows(path: Path, key: str, sheet: Optional[str] = None) -> List[tuple]:
    """All rows of a worksheet (the first/active one unless named) as tuples, empty cells as None; .xls and .xlsx."""
    if not path.is_file():
        raise DatasetError(key, "label workbook not found", path)
    try:
        if path.suffix.lower() == ".xls":
            # openpyxl cannot open Excel 97 files, and BID ships only DatabaseGrades.xls (docs/datasets.md#bid).
            import xlrd

            book = xlrd.open_workbook(str(path))
            if sheet is not None and sheet not in book.sheet_names():
                raise DatasetError(key, f"workbook has no sheet {sheet!r} (sheets: {book.sheet_names()})", path)
            table = book.sheet_by_name(sheet) if sheet is not None else book.sheet_by_index(0)
            return [tuple(None if cell == "" else cell for cell in table.row_values(i)) for i in range(table.nrows)]
        from openpyxl import load_workbook

        book = load_workbook(str(path), read_only=True, data_only=True)
        try:
            if sheet is not None and sheet not in book.sheetnames:
                raise DatasetError(key, f"workbook has no sheet {sheet!r} (sheets: {book.sheetnames})", path)
            table = book[sheet] if sheet is not None else book.active
            return [tuple(row) for row in table.iter_rows(values_only=True)]
        finally:
            book.close()
    except DatasetError:
        raise
    except Exception as error:  # a corrupt or mislabelled workbook: say which file, not just the library's complaint
        raise DatasetError(key, f"cannot read workbook ({type(error).__name__}: {error})", path) from error


def data_rows(rows: List[tuple], key: str, path: Path, header_row: int, columns: int) -> List[Tuple[int, tuple]]:
    """(spreadsheet row number, first `columns` cells) of the rows after `header_row` up to the first empty one."""
    out = []
    for index in range(header_row + 1, len(rows)):
        cells = tuple(rows[index][:columns]) + (None,) * max(0, columns - len(rows[index]))
        if all(cell is None or str(cell).strip() == "" for cell in cells):
            break  # spreadsheets often carry formatted but empty rows below the data
        out.append((index + 1, cells))
    if not out:
        raise DatasetError(key, "workbook has no data rows below the header", path, expected="one row per image")
    return out


def check_header(cells: Sequence, wanted: Sequence[str], key: str, path: Path, where: str) -> None:
    """Raise unless the header cells start with `wanted` (compared case- and space-insensitively)."""
    found = [str(cell).strip().lower() if cell is not None else "" for cell in cells[:len(wanted)]]
    if found != [name.lower() for name in wanted]:
        raise DatasetError(key, f"{where} header is {list(cells[:len(wanted)])}", path,
                           expected=f"columns {', '.join(wanted)}")


def load_mat(path: Path, key: str, variables: Iterable[str]) -> Dict[str, np.ndarray]:
    """The named variables of a MATLAB file; a DatasetError when the file or a variable is missing."""
    import scipy.io

    if not path.is_file():
        raise DatasetError(key, "label file not found", path, expected=f"a .mat file with {', '.join(variables)}")
    try:
        content = scipy.io.loadmat(str(path))
    except Exception as error:
        raise DatasetError(key, f"cannot read MATLAB file ({type(error).__name__}: {error})", path) from error
    present = sorted(name for name in content if not name.startswith("__"))
    for name in variables:
        if name not in content:
            raise DatasetError(key, f"MATLAB file has variables {present}, not {name!r}", path,
                               expected=f"variable {name!r}")
    return {name: content[name] for name in variables}


def mat_vector(array: np.ndarray, key: str, path: Path, name: str) -> np.ndarray:
    """A 1×n or n×1 MATLAB array as a flat vector; anything with two real dimensions is an error."""
    array = np.asarray(array)
    if array.ndim != 2 or min(array.shape) != 1:
        raise DatasetError(key, f"variable {name!r} has shape {array.shape}", path, expected="a 1×n or n×1 vector")
    return array.reshape(-1)


def mat_strings(array: np.ndarray, key: str, path: Path, name: str) -> List[str]:
    """The strings of a 1×n or n×1 MATLAB cell array (scipy wraps each one in a 1-element array)."""
    out = []
    for index, cell in enumerate(mat_vector(array, key, path, name)):
        value = np.asarray(cell).reshape(-1)
        if value.size != 1 or not isinstance(value[0], str):
            raise DatasetError(key, f"entry {index} of {name!r} is not a string: {cell!r}", path,
                               expected="a cell array of file names")
        out.append(value[0])
    return out


def record(root: Path, name: str, score: float, reference: Optional[str] = None) -> Record:
    """A Record whose path is root/name as written in the label file (resolved later by locate_images)."""
    path = Path(name) if os.path.isabs(name) else root.joinpath(*name.split("/"))
    return Record(name=name, path=str(path), score=float(score), reference=reference)


# ---------------------------------------------------------------- image names

def canonical_name(name: str) -> str:
    """One spelling of an image name as a user's label file writes it: '/' separators, no '.' or empty segments
    (``./images/x.png`` and ``images//x.png`` are ``images/x.png``), Unicode in NFC (macOS saves names in NFD)."""
    name = unicodedata.normalize("NFC", name.strip().replace("\\", "/"))
    return posixpath.normpath(name) if name else name


def same_image_key(name: str) -> str:
    """What two names of one image share, as FolderIndex finds files: the canonical name, case folded."""
    return canonical_name(name).casefold()


def _lookup_key(part: str) -> str:
    """A file name as FolderIndex compares it: Unicode NFC (a label written in NFC finds a file saved in NFD), lower
    case."""
    return unicodedata.normalize("NFC", part).lower()


class FolderIndex:
    """Case- and Unicode-normalisation-insensitive file lookup below one root that lists each folder at most once
    (docs/datasets.md#conventions)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._listings: Dict[str, Optional[Dict[str, List[str]]]] = {}
        self._folders: Dict[str, Set[str]] = {}

    def _listing(self, folder: Path) -> Optional[Dict[str, List[str]]]:
        key = str(folder)
        if key not in self._listings:
            try:
                with os.scandir(folder) as entries:  # scandir: an entry's type comes with the listing, no stat
                    entries = list(entries)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                self._listings[key] = None
            else:
                names = sorted(entry.name for entry in entries)
                self._folders[key] = {entry.name for entry in entries if entry.is_dir()}
                by_lower: Dict[str, List[str]] = {}
                for name in names:
                    by_lower.setdefault(_lookup_key(name), []).append(name)
                self._listings[key] = by_lower
        return self._listings[key]

    def find(self, name: str) -> Optional[Path]:
        """The existing path for a '/'-separated name, matching every component case-insensitively; None if absent."""
        path = Path(name)
        if path.is_absolute():  # the csv kind allows absolute image paths
            current, parts = Path(path.anchor), path.parts[1:]
        else:
            current, parts = self.root, name.split("/")
        for part in parts:
            if part in ("", "."):
                continue
            if part == "..":
                current = current.parent
                continue
            listing = self._listing(current)
            if listing is None:
                return None
            matches = listing.get(_lookup_key(part))
            if not matches:
                return None
            # An exact-case match wins, so a case-sensitive file system holding both spellings stays unambiguous.
            current = current / (part if part in matches else matches[0])
        return current

    def is_folder(self, path: Path) -> bool:
        """Whether ``path`` (as ``find`` returned it) is a folder, from its parent's listing."""
        self._listing(path.parent)
        return path.name in self._folders.get(str(path.parent), ())

    def folder_exists(self, folder: str) -> bool:
        """Whether a folder below the root exists (matched case-insensitively); '' is the root itself."""
        path = self.find(folder) if folder else self.root
        return path is not None and path.is_dir()

    def names_in(self, folder: str) -> Optional[List[str]]:
        """The file names in a folder below the root (listed once), or None when it does not exist."""
        path = self.find(folder) if folder else self.root
        if path is None:
            return None
        listing = self._listing(path)
        return None if listing is None else sorted(name for names in listing.values() for name in names)


# ---------------------------------------------------------------- image files

JPEG_TAIL = 32            # bytes read from a JPEG's end to find its end-of-image marker
# After a start-of-scan, entropy-coded data runs to the next marker: 0xFF followed by anything but a stuffed 0x00,
# a restart marker (0xD0-0xD7) or another 0xFF (fill).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class ImageReadError(PromptIQAError, OSError):
    """An image file that cannot be used: a folder, a truncated JPEG, or bytes OpenCV cannot decode."""


def _jpeg_reaches_eoi(data: bytes) -> bool:
    """Whether the marker structure of a JPEG (``data`` starting with SOI) reaches its end-of-image marker: segments
    are skipped by their lengths and scans to their next marker, so an EOI inside an EXIF thumbnail never counts."""
    pos, n = 2, len(data)
    while True:
        pos = data.find(b"\xff", pos)
        while 0 <= pos < n - 1 and data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos < 0 or pos + 1 >= n:
            return False
        marker = data[pos + 1]
        if marker == 0xD9:
            return True
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if pos + 4 > n or end > n:
            return False
        if marker == 0xDA:  # start of scan
            found = _NEXT_MARKER.search(data, end)
            if found is None:
                return False
            pos = found.start()
        else:
            pos = end


MISSING_IMAGE = "image file not found"
FOLDER_IMAGE = "image path is a folder, not a file"
TRUNCATED_JPEG = "truncated JPEG: it ends before its end-of-image marker (libjpeg would fill the rest with grey)"
NOT_A_FILE = "image path is not a regular file (a pipe or device)"
# The most pixels an image may have: refused from its header, before decoding (a 30000 x 30000 PNG of 2.6 MB decodes
# to 2.7 GB and takes minutes). The figure is Pillow's own decompression-bomb limit, 2 x Image.MAX_IMAGE_PIXELS; the
# largest camera and IQA images (SPAQ's smartphone photos, 12-50 megapixels) are well below it.
MAX_IMAGE_PIXELS = 178_956_970


def image_file_problem(path: Union[str, Path]) -> Optional[str]:
    """Why ``path`` cannot be an image file, found before decoding (MISSING_IMAGE, FOLDER_IMAGE, NOT_A_FILE, more than
    MAX_IMAGE_PIXELS by its header, TRUNCATED_JPEG), or None.

    libjpeg decodes a truncated JPEG with only a warning and pads the missing part grey, so a JPEG's end is checked:
    a complete one ends with its end-of-image marker (0xFFD9), possibly followed by padding (0x00/0xFF) or, rarely,
    a trailer (camera data, a second image), which a walk over its marker structure tells apart. The common case
    costs one open and two small reads. Other formats' decoders refuse truncated files themselves.
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return MISSING_IMAGE
    if stat.S_ISDIR(mode):
        return FOLDER_IMAGE
    if not stat.S_ISREG(mode):   # open() on a FIFO waits for a writer
        return NOT_A_FILE
    with open(path, "rb") as fh:
        oversized = _oversized(fh)
        if oversized:
            return oversized
        fh.seek(0)
        if fh.read(2) != b"\xff\xd8":
            return None
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(2, size - JPEG_TAIL))
        if fh.read().rstrip(b"\x00\xff").endswith(b"\xff\xd9"):
            return None
        fh.seek(0)
        return None if _jpeg_reaches_eoi(fh.read()) else TRUNCATED_JPEG


def _oversized(fh) -> Optional[str]:
    """too_many_pixels for an image whose header declares more than MAX_IMAGE_PIXELS, else None (also for a header
    Pillow cannot read: the decoder then has its say)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fh) as image:
                width, height = image.size
    except Image.DecompressionBombError as err:   # beyond Pillow's own limit (ours, unless a program changed it)
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = int(found.group(1)) if found else MAX_IMAGE_PIXELS + 1
    except Exception:  # not an image Pillow knows
        return None
    else:
        pixels = width * height
    return (f"image too large: {pixels:,} pixels, more than {MAX_IMAGE_PIXELS:,} (refused before decoding)"
            if pixels > MAX_IMAGE_PIXELS else None)


def check_image_file(path: Union[str, Path]) -> None:
    """Raise FileNotFoundError, or ImageReadError for a folder or a truncated JPEG, naming ``path``."""
    problem = image_file_problem(path)
    if problem is not None:
        raise (FileNotFoundError if problem == MISSING_IMAGE else ImageReadError)(f"{problem}: {path}")


FINGERPRINT_BLOCKS, FINGERPRINT_BLOCK = 16, 4096


def image_fingerprint(path: Union[str, Path]) -> str:
    """What identifies an image file by its content, wherever it lies and whatever it is called: 16 hex digits of
    BLAKE2b over its size and 16 evenly spaced 4 KiB blocks (the whole file up to 64 KiB). Reads at most 64 KiB."""
    with open(path, "rb") as fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size
        digest = hashlib.blake2b(f"{size}:".encode(), digest_size=8)
        if size <= FINGERPRINT_BLOCKS * FINGERPRINT_BLOCK:
            digest.update(fh.read())
        else:
            step = (size - FINGERPRINT_BLOCK) / (FINGERPRINT_BLOCKS - 1)
            for k in range(FINGERPRINT_BLOCKS):
                digest.update(os.pread(fd, FINGERPRINT_BLOCK, int(k * step)))
    return digest.hexdigest()


def verify_image(path, dataset: str = "image") -> None:
    """Raise a DatasetError unless the image at `path` is a complete file OpenCV can decode (what the training
    loader will do)."""
    import cv2

    problem = image_file_problem(path)
    if problem is not None:
        raise DatasetError(dataset, problem, path)
    if cv2.imread(str(path), cv2.IMREAD_COLOR) is None:
        raise DatasetError(dataset, "image cannot be decoded (corrupt or not an image)", path,
                           expected="a file that cv2.imread can read")
