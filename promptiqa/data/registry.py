"""The dataset registry: the facts of the 12 PromptIQA datasets, where their roots are, and loading them as records."""
from __future__ import annotations

import dataclasses
import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from promptiqa.data.formats import authentic, generated, reference_based
from promptiqa.data.formats.common import FOLDER_IMAGE, DatasetError, FolderIndex, same_image_key
from promptiqa.data.formats.custom import CSV_COLUMNS, SCORE_COLUMN, parse_csv_kind
from promptiqa.data.records import REQUIREMENT_SEPARATOR, DatasetRecords, image_set
from promptiqa.entry import command
from promptiqa.errors import ConfigError
from promptiqa.fileio import OutputError, refuse_overwriting_inputs
from promptiqa.resources import config_file


@dataclass(frozen=True)
class DatasetSpec:
    """What the protocol needs to know of one built-in dataset besides its labels."""

    title: str
    parse: Callable           # (root, key, label_norm, **options) -> (records, notes)
    label_type: str           # "MOS" or "DMOS"
    higher_is_better: bool    # polarity of the raw score; metadata only, never used to flip labels
    offset: float             # official mapping: label = (score - offset) / divisor
    divisor: float
    split_by: str             # "reference" or "image"
    images: int               # published number of labelled images (paper Table 1)
    references: Optional[int]  # published number of reference images, for reference-split datasets
    layout: str               # what a root must hold, for error messages
    # How the official class lists a train split (splits.official_train_order): "units" = the split's units in
    # their shuffled order, each unit's images in label-file order; "label_file" = label-file order, because the
    # class walks the label file and keeps the rows whose index is in the split.
    train_order: str = "units"
    task: str = ""            # the paper's task group (Table 2's column groups): synthetic, authentic, face, ...
    short_title: str = ""     # how the paper's tables head its column, when not ``title``
    reference_folder: Optional[Tuple[str, str]] = None   # (folder, extension) of a reference-based dataset's references

    @property
    def column_title(self) -> str:
        """The dataset's name in a table heading (the paper's)."""
        return self.short_title or self.title


# The official code's fixed per-dataset score mappings, kept even where they look odd
# (docs/datasets.md#official-label-normalisation).
DATASET_SPECS: Dict[str, DatasetSpec] = {
    "live": DatasetSpec("LIVE IQA Release 2", reference_based.parse_live, "DMOS", False, 1.0, 100.0, "reference",
                        779, 29, "dmos.mat, dmos_realigned.mat, refnames_all.mat, refimgs/, jp2k/ jpeg/ wn/ gblur/ "
                        "fastfading/ (the databaserelease2 folder)", task="synthetic", short_title="LIVE",
                        reference_folder=("refimgs", ".bmp")),
    "csiq": DatasetSpec("CSIQ", reference_based.parse_csiq, "DMOS", False, 0.0, 1.0, "reference", 866, 30,
                        "csiq_label.txt or csiq.DMOS.xlsx, src_imgs/, dst_imgs/<type>/ or dst_imgs_all/",
                        task="synthetic", reference_folder=("src_imgs", ".png")),
    "tid2013": DatasetSpec("TID2013", reference_based.parse_tid2013, "MOS", True, 0.0, 9.0, "reference", 3000, 25,
                           "mos_with_names.txt, distorted_images/, reference_images/", task="synthetic",
                           reference_folder=("reference_images", ".bmp")),
    # KADID's column is called dmos but is a 1-5 MOS where higher is better (docs/datasets.md#kadid).
    "kadid": DatasetSpec("KADID-10k", reference_based.parse_kadid, "MOS", True, 1.0, 5.0, "reference", 10125, 81,
                         "dmos.csv, images/ (the kadid10k folder)", train_order="label_file", task="synthetic",
                         reference_folder=("images", ".png")),   # the references I01.png .. beside the distorted
    # BID's MOS is on [0, 5], but the official code divides by 9 (a copy of TID2013's divisor): labels 0.018-0.547.
    "bid": DatasetSpec("BID", authentic.parse_bid, "MOS", True, 0.0, 9.0, "image", 586, None,
                       "DatabaseGrades.xls or .xlsx beside DatabaseImage*.JPG (the ImageDatabase folder)",
                       task="authentic"),
    "spaq": DatasetSpec("SPAQ", authentic.parse_spaq, "MOS", True, 0.0, 100.0, "image", 11125, None,
                        "Annotations/MOS and Image attribute scores.xlsx (or with underscores), TestImage/ or "
                        "img_resize/", train_order="label_file", task="authentic"),
    "livec": DatasetSpec("LIVE In the Wild Challenge", authentic.parse_livec, "MOS", True, 1.0, 100.0, "image", 1162,
                         None, "Data/AllImages_release.mat, Data/AllMOS_release.mat, Images/ "
                               "(the ChallengeDB_release folder)", task="authentic", short_title="LIVEC"),
    "koniq10k": DatasetSpec("KonIQ-10k", authentic.parse_koniq10k, "MOS", True, 0.0, 100.0, "image", 10073, None,
                            "koniq10k_distributions_sets.csv (in the root or metadata/), 1024x768/",
                            task="authentic"),
    "gfiqa_20k": DatasetSpec("GFIQA-20k", authentic.parse_gfiqa_20k, "MOS", True, 0.0, 1.0, "image", 19998, None,
                             "mos.csv or mos_val_rating.csv (or give the label CSV itself as the root), image/",
                             task="face"),
    "agiqa_3k": DatasetSpec("AGIQA-3K", generated.parse_agiqa_3k, "MOS", True, 0.0, 5.0, "image", 2982, None,
                            "data.csv, img/", task="AI-generated"),
    "aigciqa2023": DatasetSpec("AIGCIQA2023", generated.parse_aigciqa2023, "MOS", True, 0.0, 100.0, "image", 2400,
                               None, "DATA/MOS/mosz1.mat, Image/allimg/", task="AI-generated"),
    # The released dataset_info.json spells this key `uqiqa`; the loaders and we use `uwiqa` (docs/datasets.md#uwiqa).
    "uwiqa": DatasetSpec("UWIQA", authentic.parse_uwiqa, "MOS", True, 0.0, 1.0, "image", 890, None,
                         "IQA_Value.xlsx, img/", train_order="label_file", task="underwater"),
}
DATASET_KEYS: Tuple[str, ...] = tuple(DATASET_SPECS)
# Table 2's task groups in the paper's order (the registry's), each with its datasets
TASKS: Tuple[Tuple[str, Tuple[str, ...]], ...] = tuple(
    (task, tuple(k for k, s in DATASET_SPECS.items() if s.task == task))
    for task in dict.fromkeys(s.task for s in DATASET_SPECS.values()))


@dataclass(frozen=True)
class Requirement:
    """An assessment requirement a built-in dataset's label files hold besides its default one (its MOS): where the
    scores are, how they map to labels and their polarity (docs/datasets.md#requirements)."""

    column: str               # the parser's `column`: a label-file column, a workbook header or a .mat file
    offset: float             # label = (score - offset) / divisor, on the pattern of the dataset's official mapping
    divisor: float
    higher_is_better: bool    # metadata only, as for the default requirement
    scale: str                # where the score range (and so the divisor) comes from


# The default requirement of every built-in dataset is called `quality` (`agiqa_3k:quality` is `agiqa_3k`); its
# column, mapping and polarity are the DatasetSpec's. A csv dataset's default is its `score` column.
DEFAULT_REQUIREMENT = "quality"
_SPAQ_ATTRIBUTE = ("an attribute rating of SPAQ's study, on the MOS's 0-100 scale (the SPAQ paper; the workbook "
                   "was not seen: unverified), so /100 as the MOS")
REQUIREMENTS: Dict[str, Dict[str, Requirement]] = {
    "agiqa_3k": {"align": Requirement("mos_align", 0.0, 5.0, True,
                                      "text-image alignment MOS, normalised to 0-5 as mos_quality is (observed "
                                      "0.02-4.29), so /5 as mos_quality")},
    # The three MOSz files of the release share one index (image i of Image/allimg/i.png): the quality file's split.
    "aigciqa2023": {name: Requirement(f"DATA/MOS/{file}", 0.0, 100.0, True,
                                      f"MOSz of {file}, a z-score rescaled MOS on about 0-100 as mosz1.mat's "
                                      f"(observed {seen}), so /100 as the quality MOSz")
                    for name, file, seen in (("authenticity", "mosz2.mat", "28.42-73.72"),
                                             ("correspondence", "mosz3.mat", "27.69-72.39"))},
    "spaq": {column.lower(): Requirement(column, 0.0, 100.0, True, _SPAQ_ATTRIBUTE)
             for column in ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")},
}
LABEL_NORMS = ("official", "minmax")
CSV_KIND = "csv"
ENV_VAR = "PROMPTIQA_DATA"
DEFAULT_CONFIG = Path("configs") / "datasets.yaml"


def split_key(key: str) -> Tuple[str, Optional[str]]:
    """(the dataset's own key, the requirement or None for the default one): 'agiqa_3k:align' -> ('agiqa_3k',
    'align'); 'agiqa_3k:quality' and 'agiqa_3k' -> ('agiqa_3k', None); 'mine:score' -> ('mine', None)."""
    base, _, requirement = key.partition(REQUIREMENT_SEPARATOR)
    default = DEFAULT_REQUIREMENT if base in DATASET_SPECS else SCORE_COLUMN
    return base, (requirement if key != base and requirement != default else None)


def canonical_key(key: str) -> str:
    """The one spelling of a key: the default requirement named is the dataset itself ('agiqa_3k:quality' ->
    'agiqa_3k')."""
    base, requirement = split_key(key)
    return base if requirement is None else f"{base}{REQUIREMENT_SEPARATOR}{requirement}"


def requirement_keys(key: str) -> List[str]:
    """The keys of a built-in dataset's requirements, the default first: agiqa_3k -> [agiqa_3k, agiqa_3k:align]."""
    base = image_set(key)
    return [base] + [f"{base}{REQUIREMENT_SEPARATOR}{name}" for name in REQUIREMENTS.get(base, {})]


def spec_of(key: str) -> Optional[DatasetSpec]:
    """The DatasetSpec of a built-in key or one of its requirements ('spaq:sharpness'); None for a csv dataset."""
    return DATASET_SPECS.get(image_set(key))


def dataset_kind(name: str, root: Union[str, Path]) -> str:
    """The registry key whose parser reads `root` for the dataset called `name` (or `name:requirement`): a built-in
    key or 'csv'."""
    base, requirement = split_key(name)
    kind = _kind(base, root)
    known = REQUIREMENTS.get(kind, {}) if kind != CSV_KIND else None   # a csv file's columns are read at load
    if requirement is not None and (not requirement or (known is not None and requirement not in known)):
        raise DatasetError(name, f"unknown requirement {requirement!r} of {kind}", root,
                           expected=f"one of {', '.join(requirement_keys(kind))} (docs/datasets.md#requirements)"
                           if kind != CSV_KIND else "a score column's name after the ':'")
    return kind


def _kind(name: str, root: Union[str, Path]) -> str:
    is_csv = str(root).lower().endswith(".csv")
    if name in DATASET_SPECS:
        # A .csv root for GFIQA is its label file (the official name mos.csv is not what the release ships).
        if is_csv and name != "gfiqa_20k":
            raise DatasetError(name, "a .csv root means your own `csv` dataset, but this name is a built-in key", root,
                               expected=f"another name for the csv dataset, e.g. --data_root my_{name}={root}")
        return name
    if is_csv:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise DatasetError(name, "a dataset name may only hold letters, digits, '_', '.' and '-'", root)
        return CSV_KIND
    raise DatasetError(name, "unknown dataset key", root,
                       expected=f"one of {', '.join(DATASET_KEYS)}, or NAME=path/to/labels.csv for your own data")


def hold_out(keys: List[str], exclude: List[str]) -> List[str]:
    """``keys`` without the datasets ``exclude`` names, each with its requirements (`agiqa_3k` holds out
    `agiqa_3k:align` too: the same images); a name in no key of a mix it changes, or leaving none, is refused."""
    if not isinstance(keys, list) or not isinstance(exclude, list):
        return keys   # a setting of the wrong type: TrainConfig.validate names it
    kept = [key for key in keys if key not in exclude and image_set(key) not in exclude]
    unmatched = [name for name in exclude if not any(name in (key, image_set(key)) for key in keys)]
    # a typo is refused; a built-in key already out of the mix is not (the recorded settings of a run hold the names
    # again, the mix already without them)
    if unmatched and (kept != keys or any(image_set(name) not in DATASET_SPECS for name in unmatched)):
        raise ConfigError(f"--exclude {' '.join(unmatched)}: not in the training mix ({' '.join(keys)})")
    if keys and not kept:
        raise ConfigError(f"--exclude leaves no dataset of the training mix ({' '.join(keys)})")
    return kept


def load_dataset(key: str, root: Union[str, Path], label_norm: str = "official", check_images: bool = True,
                 **options) -> DatasetRecords:
    """Read a dataset's label files into records; a root ending in .csv loads the `csv` kind under the name `key`."""
    if label_norm not in LABEL_NORMS:
        raise DatasetError(key, f"unknown label_norm {label_norm!r}", expected=" or ".join(map(repr, LABEL_NORMS)))
    root = Path(os.path.expanduser(str(root)))
    kind = dataset_kind(key, root)
    key, (_, requirement) = canonical_key(key), split_key(key)
    if kind == CSV_KIND:
        _check_options(key, _load_csv_kind, options)
        dataset = _load_csv_kind(root, key, label_norm, column=requirement or SCORE_COLUMN, **options)
    else:
        if kind == "gfiqa_20k" and root.suffix.lower() == ".csv":
            options.setdefault("label_file", root.name)
            root = root.parent
        spec = DATASET_SPECS[kind]
        if not root.is_dir():
            raise DatasetError(key, "dataset root not found" if not root.exists() else "dataset root is not a folder",
                               root, expected=spec.layout)
        _check_options(key, spec.parse, options)
        req = REQUIREMENTS[kind][requirement] if requirement else None
        records, notes = spec.parse(root, key, label_norm, **({"column": req.column} if req else {}), **options)
        label_type, higher_is_better, offset, divisor = (spec.label_type, spec.higher_is_better, spec.offset,
                                                         spec.divisor) if req is None else \
            ("MOS" if req.higher_is_better else "DMOS", req.higher_is_better, req.offset, req.divisor)
        if req is not None:
            notes.append(f"requirement {requirement}: {req.column}, {req.scale}")
        dataset = DatasetRecords(key=key, root=str(root), records=records, split_by=spec.split_by, units=[],
                                 label_type=label_type, higher_is_better=higher_is_better, label_norm=label_norm,
                                 official_offset=offset, official_divisor=divisor, notes=notes)
        if len(records) != spec.images:
            dataset.notes.append(f"{len(records)} labelled images; the published dataset has {spec.images}")
    _check_names(dataset)
    dataset.units = _units(dataset, sort_images=kind == CSV_KIND)
    if check_images:
        dataset, problems = locate_images(dataset)
        if problems:
            shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
            raise DatasetError(key, f"{len(problems)} image problem(s): {shown}", dataset.root,
                               expected="every labelled image present (names match case-insensitively); "
                                        f"{command('check')} lists them all")
    return dataset


def _check_options(key: str, parse: Callable, options: Mapping) -> None:
    # `column` is how the registry names a requirement's scores, not a user's option
    accepted = [name for name in inspect.signature(parse).parameters
                if name not in ("root", "key", "label_norm", "column")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(key, f"unknown loader option(s) {unknown}",
                           expected=f"one of {accepted}" if accepted else "no options for this dataset")


def _load_csv_kind(root: Path, key: str, label_norm: str, higher_is_better: bool = True,
                   column: str = SCORE_COLUMN) -> DatasetRecords:
    """A user's label file (the root): split by reference when it has that column; 'official' = whole-file min-max
    of the scores of ``column`` (another score column: a requirement, `name:column`)."""
    label_path = root
    if not label_path.is_file():
        raise DatasetError(key, "label file not found", label_path,
                           expected=f"a CSV with columns {','.join(CSV_COLUMNS[:2])}[,{CSV_COLUMNS[2]}][,other score "
                                    f"columns], image paths relative to it")
    records, has_reference = parse_csv_kind(label_path, key, column)
    low, high = min(r.score for r in records), max(r.score for r in records)
    if high <= low:
        raise DatasetError(key, f"every score equals {low:g}, so they cannot be min-max normalised", label_path,
                           expected="at least two different scores")
    notes = [f"label_norm='official' for a csv dataset is min-max over the whole file ({low:g} to {high:g})"]
    return DatasetRecords(key=key, root=str(label_path), records=records,
                          split_by="reference" if has_reference else "image", units=[],
                          label_type="MOS" if higher_is_better else "DMOS", higher_is_better=bool(higher_is_better),
                          label_norm=label_norm, official_offset=low, official_divisor=high - low, notes=notes)


def refuse_overwriting_dataset(outputs: Sequence[Tuple[str, object]], dataset: DatasetRecords,
                               inputs: Sequence[Tuple[str, object]] = ()) -> None:
    """Refuse (OutputError, before any work) outputs that would replace one of ``dataset``'s files: its label file,
    any of its images, any existing file in its folder (label files, reference images, readme), or one of ``inputs``
    (e.g. a split file, the checkpoint)."""
    root = Path(dataset.root)
    refuse_overwriting_inputs(outputs, [("the label file of " + dataset.key, root)] + list(inputs)
                              + [(f"an image of {dataset.key}", r.path) for r in dataset.records])
    for what, path in outputs:
        target = Path(path).resolve()
        if root.is_dir() and target.is_file() and root.resolve() in target.parents:
            raise OutputError(f"{what} {path} is a file in {dataset.key}'s folder {root}: refusing to overwrite a "
                              f"dataset's file; choose another output path")


def _check_names(dataset: DatasetRecords) -> None:
    # Split files and caches identify an image by its name, so a repeated name would make two samples one; and two
    # spellings of one file (letter case, Unicode form: images are found ignoring both) would put it on both sides of
    # a by-image split.
    spellings: Dict[str, List[str]] = {}
    for rec in dataset.records:
        spellings.setdefault(same_image_key(rec.name), []).append(rec.name)
    repeated = sorted(names for names in spellings.values() if len(names) > 1)
    if repeated:
        shown = " and ".join(map(repr, sorted(set(repeated[0]))[:3]))
        raise DatasetError(dataset.key, f"{len(repeated)} image(s) are labelled more than once, e.g. {shown}",
                           dataset.root, expected="each image labelled once (names that differ only in letter case "
                                                  "or Unicode form are one file)")


def _units(dataset: DatasetRecords, sort_images: bool) -> List[str]:
    """Split units in the order the split enumerates them (see records.py)."""
    if dataset.split_by == "reference":
        # The official reference order came from os.listdir, which no machine can reproduce: sort
        # (docs/datasets.md#splits).
        # For KADID the sorted ids I01..I81 are also its label-file order and its official index order.
        return sorted({r.reference for r in dataset.records})
    names = [r.name for r in dataset.records]
    # Built-in by-image datasets keep label-file order, so a seed gives the official partition; a csv dataset's
    # units are sorted so that label files over the same images split them alike.
    return sorted(names) if sort_images else names


def _image_base(dataset: DatasetRecords) -> Path:
    return Path(dataset.root).parent if spec_of(dataset.key) is None else Path(dataset.root)


def locate_images(dataset: DatasetRecords) -> Tuple[DatasetRecords, List[str]]:
    """Resolve every record's image case-insensitively (listing each folder once); return the copy and the problems."""
    base = _image_base(dataset)
    index = FolderIndex(base)
    located, missing, folders = [], [], []
    for rec in dataset.records:
        found = index.find(rec.name)
        if found is None:
            missing.append(rec)
            located.append(rec)
        else:
            located.append(dataclasses.replace(rec, path=str(found)))
            if index.is_folder(found):
                folders.append(f"{FOLDER_IMAGE}: {found}")
    problems = []
    by_folder: Dict[str, List[str]] = {}
    for rec in missing:
        folder = os.path.dirname(rec.name) if not os.path.isabs(rec.name) else None
        if folder is not None and folder and not index.folder_exists(folder):
            by_folder.setdefault(folder, []).append(rec.name)
        else:
            problems.append(f"image not found: {rec.path}")
    problems = [f"image folder not found: {base / folder} ({len(names)} labelled images are in it)"
                for folder, names in sorted(by_folder.items())] + problems + folders
    if image_set(dataset.key) in reference_based.REFERENCE_NAMES:
        problems += _reference_problems(dataset, index, base)
    return dataclasses.replace(dataset, records=located), problems


def _reference_problems(dataset: DatasetRecords, index: FolderIndex, base: Path) -> List[str]:
    """Compare the reference folder with the references the label files name (the official code lists this folder)."""
    folder, extension = DATASET_SPECS[image_set(dataset.key)].reference_folder
    reference_of = reference_based.REFERENCE_NAMES[image_set(dataset.key)]
    names = index.names_in(folder)
    if names is None:
        return [f"reference folder not found: {base / folder} ({len(dataset.units)} *{extension} reference images)"]
    found = {reference_of(name): name for name in names if name.lower().endswith(extension)}
    labelled = set(dataset.units)
    problems = [f"reference image of {ref!r} not found in {base / folder}" for ref in sorted(labelled - set(found))]
    problems += [f"reference image {base / folder / found[ref]} has no labelled images"
                 for ref in sorted(set(found) - labelled)]
    return problems


# ---------------------------------------------------------------- where the roots are

def parse_data_root_args(values: Iterable[str]) -> Dict[str, str]:
    """{key: path} from repeated '--data_root key=path' values; malformed or repeated keys are errors."""
    roots: Dict[str, str] = {}
    for value in values or ():
        key, sep, path = str(value).partition("=")
        key, path = key.strip(), path.strip()
        if not sep or not key or not path:
            raise DatasetError(key or "--data_root", f"malformed --data_root value {value!r}",
                               expected="key=path, e.g. live=/datasets/databaserelease2 or mydata=labels.csv")
        if key in roots:
            raise DatasetError(key, f"--data_root given twice for this key ({roots[key]!r} and {path!r})")
        roots[key] = path
    return roots


def read_config(config: Union[None, str, Path, Mapping] = None) -> Dict[str, str]:
    """The key -> path mapping of a datasets YAML file (default configs/datasets.yaml in the working folder, else the
    shipped one)."""
    if isinstance(config, Mapping):
        entries = dict(config)
    else:
        if config is None:
            path = config_file(DEFAULT_CONFIG)  # the working folder's configs/datasets.yaml, else the shipped one
            if not path.is_file():
                return {}
        else:
            path = Path(config)
            if not path.is_file():
                raise DatasetError("config", "dataset config file not found", path, expected="a YAML mapping key: path")
        import yaml

        with open(path, encoding="utf-8") as handle:
            entries = yaml.safe_load(handle) or {}
        if not isinstance(entries, dict):
            raise DatasetError("config", "dataset config is not a mapping", path, expected="lines of 'key: path'")
    return {str(key): str(value) for key, value in entries.items() if value is not None}


def resolve_roots(keys: Iterable[str], config: Union[None, str, Path, Mapping] = None,
                  overrides: Union[Iterable[str], Mapping[str, str]] = (),
                  env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Absolute root per key: --data_root override > $PROMPTIQA_DATA/<key> > config file > data/<key> (cwd-relative).
    A requirement (`key:req`) has its dataset's root unless one is given for `key:req` itself."""
    overrides = dict(overrides) if isinstance(overrides, Mapping) else parse_data_root_args(overrides)
    env = os.environ if env is None else env
    parent = env.get(ENV_VAR) or None
    entries = read_config(config)
    for name, path in list(entries.items()) + list(overrides.items()):
        dataset_kind(name, path)  # a typo in a key fails here, naming the valid keys
    roots = {}
    for key in keys:
        base = image_set(key)
        if key in overrides or base in overrides:
            path = overrides.get(key) or overrides[base]
        elif parent and base in DATASET_SPECS:
            path = os.path.join(parent, base)
        elif key in entries or base in entries:
            path = entries.get(key) or entries[base]
        elif base in DATASET_SPECS:
            path = os.path.join("data", base)
        else:
            dataset_kind(key, "")  # raises: unknown key, with the list of valid ones
        dataset_kind(key, path)  # an unknown requirement fails here, before any work, listing the dataset's
        roots[key] = os.path.abspath(os.path.expanduser(path))
    return roots
