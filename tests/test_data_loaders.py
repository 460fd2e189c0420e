"""Dataset registry, per-format parsers, label normalisation and root resolution, on real label files and fixtures."""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from promptiqa.data import (DATASET_KEYS, DatasetError, load_dataset, normalise_labels, parse_data_root_args,
                            resolve_roots, verify_image)
from promptiqa.data.formats import common
from tests.fixtures.datasets import (FIXTURE_KEYS, build_fixture, build_from_published, write_csv,
                                     write_live_labels, write_livec_labels)

REPO = Path(__file__).resolve().parents[1]


def scores(ds):
    return np.array([r.score for r in ds.records])


# ---------------------------------------------------------------- real label files in the authors' own format

# key: (images, references, first record name, its score, its reference) from the files themselves.
TABLE_1 = {
    "koniq10k": (10073, None, "1024x768/10004473376.jpg", 77.3836206897, None),
    "kadid": (10125, 81, "images/I01_01_01.png", 4.57, "I01"),
    "tid2013": (3000, 25, "distorted_images/I01_01_1.bmp", 5.51429, "I01"),
    "csiq": (866, 30, "dst_imgs_all/1600.AWGN.1.png", 0.061989, "1600"),
    "bid": (586, None, "DatabaseImage0001.JPG", 4.516640224615385, None),
    "agiqa_3k": (2982, None, "img/AttnGAN_normal_000.jpg", 0.965602553, None),
}


@pytest.mark.parametrize("key", sorted(TABLE_1))
def test_real_label_files_give_the_paper_counts(labels_dir, key):
    images, references, first_name, first_score, first_reference = TABLE_1[key]
    ds = load_dataset(key, labels_dir / key, check_images=False)
    assert len(ds.records) == images
    assert ds.records[0].name == first_name and ds.records[0].score == pytest.approx(first_score)
    assert ds.records[0].reference == first_reference
    if references is None:
        assert ds.split_by == "image" and ds.units == [r.name for r in ds.records]  # label-file order
    else:
        assert ds.split_by == "reference" and ds.units == sorted({r.reference for r in ds.records})
        assert len(ds.units) == references
    labels = normalise_labels(ds)
    assert labels.dtype == np.float32 and 0 <= labels.min() and labels.max() <= 1


def test_real_official_label_ranges_keep_the_odd_divisors(labels_dir):
    # docs/datasets.md#official-label-normalisation: BID's /9 gives 0.018-0.547, KADID's (x-1)/5 0-0.786, TID2013's
    # /9 0.027-0.802.
    expected = {"bid": (0.018, 0.547), "kadid": (0.0, 0.786), "tid2013": (0.027, 0.802), "koniq10k": (0.039, 0.884)}
    for key, (low, high) in expected.items():
        labels = normalise_labels(load_dataset(key, labels_dir / key, check_images=False))
        assert (labels.min(), labels.max()) == pytest.approx((low, high), abs=6e-4), key


def test_kadid_units_are_the_official_reference_index_order(labels_dir):
    ds = load_dataset("kadid", labels_dir / "kadid", check_images=False)
    assert ds.units == [f"I{i:02d}" for i in range(1, 82)]
    first_seen = list(dict.fromkeys(r.reference for r in ds.records))
    assert ds.units == first_seen  # the label file's order too


def test_csiq_authors_workbook_gives_the_label_txt_records(labels_dir, tmp_path):
    os.symlink(labels_dir / "csiq" / "csiq.beta.xlsx", tmp_path / "csiq.DMOS.xlsx")  # the distributed file name
    from_xlsx = load_dataset("csiq", tmp_path, check_images=False)
    from_txt = load_dataset("csiq", labels_dir / "csiq", check_images=False)
    assert len(from_xlsx.records) == 866 and from_xlsx.units == from_txt.units
    txt = {r.name: r.score for r in from_txt.records}
    assert {r.name for r in from_xlsx.records} == set(txt)
    assert max(abs(r.score - txt[r.name]) for r in from_xlsx.records) < 5e-7
    # Within each reference both files list the images in the same order, which is what the official code uses.
    for ref in from_txt.units:
        assert ([r.name for r in from_xlsx.records if r.reference == ref]
                == [r.name for r in from_txt.records if r.reference == ref])


# ---------------------------------------------------------------- derived lists written in the authors' formats

@pytest.fixture(scope="module")
def published(labels_dir, tmp_path_factory):
    """Roots holding the derived real lists written as LIVE/LIVEC/SPAQ/GFIQA/AIGCIQA2023 label files (once)."""
    base = tmp_path_factory.mktemp("published")
    return {key: build_from_published(key, labels_dir, base / key)
            for key in ("live", "livec", "spaq", "gfiqa_20k", "aigciqa2023")}


def test_live_official_reads_unrealigned_dmos_of_dmos_mat(published, labels_dir):
    ds = load_dataset("live", published["live"], check_images=False)
    assert len(ds.records) == 779 and len(ds.units) == 29
    assert scores(ds).min() == pytest.approx(17.902424) and scores(ds).max() == pytest.approx(84.488972)
    labels = normalise_labels(ds)
    assert (labels.min(), labels.max()) == pytest.approx((0.169, 0.835), abs=5e-4)
    # The global order jp2k 1..227, jpeg 1..233, ... matches the published list's image paths and references.
    lines = [line.split("\t") for line in (labels_dir / "live" / "MOS_NAME_REF.txt").read_text().splitlines()]
    distorted = [(f[1], f[2].strip().rsplit(".", 1)[0]) for f in lines if float(f[0]) != 0]
    assert [(r.name, r.reference) for r in ds.records] == distorted
    assert ds.label_type == "DMOS" and ds.higher_is_better is False
    assert ds.units == sorted(ds.units) and ds.units[0] == "bikes"


def test_live_minmax_reads_realigned_dmos_new(published):
    ds = load_dataset("live", published["live"], label_norm="minmax", check_images=False)
    assert len(ds.records) == 779
    assert (scores(ds).min(), scores(ds).max()) == pytest.approx((-2.64, 111.77), abs=0.01)
    labels = normalise_labels(ds)
    assert labels.min() == 0 and labels.max() == 1


def test_live_realigned_dmos_under_the_official_mapping_is_refused(published, tmp_path):
    # Substituting dmos_new for the official `dmos` puts 21 of 779 labels outside [0, 1] (docs/datasets.md#live).
    root = tmp_path / "live"
    shutil.copytree(published["live"], root)
    import scipy.io

    realigned = scipy.io.loadmat(root / "dmos_realigned.mat")
    scipy.io.savemat(root / "dmos.mat", {"dmos": realigned["dmos_new"], "orgs": realigned["orgs"]})
    ds = load_dataset("live", root, check_images=False)
    with pytest.raises(DatasetError, match=r"\[live\] 21 of 779 labels fall outside \[0, 1\].*-0\.036") as error:
        normalise_labels(ds)
    assert "(score - 1) / 100" in str(error.value)


def test_live_third_party_modified_copies_are_rejected(labels_dir, tmp_path):
    for name in ("dmos_realigned.mat", "refnames_all.mat"):
        shutil.copy(labels_dir / "live" / "modified_copies" / name, tmp_path / name)
    with pytest.raises(DatasetError, match=r"'orgs' has 779 entries.*expected 982 entries"):
        load_dataset("live", tmp_path, label_norm="minmax", check_images=False)
    with pytest.raises(DatasetError, match=r"dmos\.mat not found.*dmos_realigned\.mat has no `dmos`"):
        load_dataset("live", tmp_path, check_images=False)


def test_livec_drops_the_seven_training_images_and_keeps_mat_order(published, labels_dir):
    ds = load_dataset("livec", published["livec"], check_images=False)
    rows = [line.split("\t") for line in (labels_dir / "livec" / "clive_all.txt").read_text().splitlines()]
    assert len(ds.records) == 1162
    assert [r.name for r in ds.records] == [row[0] for row in rows]  # Images/<name>, in the .mat's order
    assert ds.units == [r.name for r in ds.records]
    assert (scores(ds).min(), scores(ds).max()) == pytest.approx((3.42, 92.431953))
    assert not any(r.name.startswith("Images/t") for r in ds.records)


def test_spaq_workbook_gives_11125_images_in_file_order(published):
    ds = load_dataset("spaq", published["spaq"], check_images=False)
    assert len(ds.records) == 11125
    assert ds.units[0] == "img_resize/00001.jpg" and ds.units[-1] == "img_resize/11125.jpg"
    assert (scores(ds).min(), scores(ds).max()) == (2, 96)
    assert normalise_labels(ds).max() == pytest.approx(0.96)


def test_gfiqa_label_csv_under_its_release_name_and_as_a_root(published):
    by_folder = load_dataset("gfiqa_20k", published["gfiqa_20k"], check_images=False)
    by_file = load_dataset("gfiqa_20k", published["gfiqa_20k"] / "mos_val_rating.csv", check_images=False)
    assert len(by_folder.records) == len(by_file.records) == 19998
    assert by_file.root == str(published["gfiqa_20k"]) and by_file.records == by_folder.records
    assert (scores(by_folder).min(), scores(by_folder).max()) == pytest.approx((0.0047, 0.9413), abs=1e-4)


def test_aigciqa2023_mosz_index_is_the_file_number(published):
    ds = load_dataset("aigciqa2023", published["aigciqa2023"], check_images=False)
    assert len(ds.records) == 2400 and ds.records[2399].name == "Image/allimg/2399.png"
    assert ds.records[0].score == pytest.approx(60.16417843)
    assert (scores(ds).min(), scores(ds).max()) == pytest.approx((26.63, 72.11), abs=0.01)


# ---------------------------------------------------------------- fixtures in every format

@pytest.mark.parametrize("key", FIXTURE_KEYS)
def test_every_fixture_format_loads_with_its_images(tmp_path, key):
    name = "my_data" if key == "csv" else key
    ds = load_dataset(name, build_fixture(key, tmp_path / key, n_refs=3, per_ref=4))
    assert len(ds.records) == 12
    assert all(Path(r.path).is_file() for r in ds.records)
    if key in ("live", "csiq", "tid2013", "kadid", "csv"):
        assert ds.split_by == "reference" and len(ds.units) == 3 and ds.units == sorted(ds.units)
        assert all(sum(r.reference == unit for r in ds.records) == 4 for unit in ds.units)
    else:
        assert ds.split_by == "image" and ds.units == [r.name for r in ds.records]
    labels = normalise_labels(ds)
    assert labels.shape == (12,) and 0 <= labels.min() and labels.max() <= 1
    verify_image(ds.records[0].path, key)


def test_fixtures_are_deterministic(tmp_path):
    a = load_dataset("koniq10k", build_fixture("koniq10k", tmp_path / "a", seed=5))
    b = load_dataset("koniq10k", build_fixture("koniq10k", tmp_path / "b", seed=5))
    assert scores(a).tolist() == scores(b).tolist()
    assert (Path(a.records[0].path).read_bytes() == Path(b.records[0].path).read_bytes())


def test_tid2013_names_resolve_case_insensitively(tmp_path):
    ds = load_dataset("tid2013", build_fixture("tid2013", tmp_path))
    odd = [r for r in ds.records if r.name.endswith(".BMP")]
    assert odd and all(Path(r.path).name == Path(r.name).name.lower() for r in odd)
    assert ds.records[0].name == "distorted_images/I01_01_1.bmp"  # the label file's spelling stays the id
    assert Path(ds.records[0].path).name == "i01_01_1.bmp"


def test_each_image_folder_is_listed_once(tmp_path, monkeypatch):
    root = build_fixture("csiq", tmp_path, n_refs=4, per_ref=12)
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(common.os, "scandir", lambda path: listed.append(str(path)) or real_scandir(path))
    load_dataset("csiq", root)
    assert len(listed) == len(set(listed))
    assert str(root / "dst_imgs" / "awgn") in listed


def test_csiq_workbook_tree_and_flat_layouts_agree(tmp_path):
    tree = load_dataset("csiq", build_fixture("csiq", tmp_path / "tree"))
    flat = load_dataset("csiq", build_fixture("csiq", tmp_path / "flat", layout="flat"))
    workbook = load_dataset("csiq", build_fixture("csiq", tmp_path / "xlsx", label="xlsx"))
    assert tree.records[0].name == "dst_imgs/awgn/ref00.AWGN.1.png"
    assert flat.records[0].name == "dst_imgs_all/ref00.AWGN.1.png"
    assert [r.name for r in workbook.records] == [r.name for r in tree.records]
    assert scores(workbook) == pytest.approx(scores(tree)) and scores(flat).tolist() == scores(tree).tolist()


def test_alternative_file_names_and_places(tmp_path):
    spaq = load_dataset("spaq", build_fixture("spaq", tmp_path / "spaq", underscores=True, image_folder="img_resize"))
    assert spaq.records[0].name == "img_resize/00001.jpg"
    koniq = load_dataset("koniq10k", build_fixture("koniq10k", tmp_path / "koniq", under_metadata=True))
    assert len(koniq.records) == 12
    gfiqa = build_fixture("gfiqa_20k", tmp_path / "gfiqa", label_file="ratings.csv")
    assert len(load_dataset("gfiqa_20k", gfiqa, label_file="ratings.csv").records) == 12
    with pytest.raises(DatasetError, match=r"'mos\.csv' or 'mos_val_rating\.csv'"):
        load_dataset("gfiqa_20k", gfiqa)


def test_bid_reads_float_image_numbers_and_skips_absent_ones(tmp_path):
    ds = load_dataset("bid", build_fixture("bid", tmp_path))
    assert [r.name for r in ds.records[:3]] == ["DatabaseImage0001.JPG", "DatabaseImage0003.JPG",
                                                 "DatabaseImage0004.JPG"]


def test_live_fixture_reads_dmos_or_dmos_new_by_label_norm(tmp_path):
    root = build_fixture("live", tmp_path)
    official = load_dataset("live", root)
    minmax = load_dataset("live", root, label_norm="minmax")
    assert [r.name for r in official.records] == [r.name for r in minmax.records]
    assert scores(minmax) == pytest.approx(scores(official) * 1.1 - 2.0, abs=1e-3)  # fixture rounds to 4 places
    assert "970 reference copies (orgs == 1) are not samples" in official.notes


# ---------------------------------------------------------------- labels

OFFICIAL_MAPPINGS = {"live": (1, 100), "csiq": (0, 1), "tid2013": (0, 9), "kadid": (1, 5), "bid": (0, 9),
                     "spaq": (0, 100), "livec": (1, 100), "koniq10k": (0, 100), "gfiqa_20k": (0, 1),
                     "agiqa_3k": (0, 5), "aigciqa2023": (0, 100), "uwiqa": (0, 1)}


@pytest.mark.parametrize("key", DATASET_KEYS)
def test_official_mapping_is_the_fixed_per_dataset_constant(tmp_path, key):
    ds = load_dataset(key, build_fixture(key, tmp_path, images=False), check_images=False)
    offset, divisor = OFFICIAL_MAPPINGS[key]
    assert normalise_labels(ds) == pytest.approx((scores(ds) - offset) / divisor, rel=1e-6)
    subset = [5, 0, 7]
    assert normalise_labels(ds, subset) == pytest.approx((scores(ds)[subset] - offset) / divisor, rel=1e-6)


def test_minmax_normalises_each_split_independently(tmp_path):
    ds = load_dataset("koniq10k", build_fixture("koniq10k", tmp_path), label_norm="minmax")
    train, test = list(range(0, 8)), list(range(8, 12))
    for part in (train, test):
        labels, raw = normalise_labels(ds, part), scores(ds)[part]
        assert labels.min() == 0 and labels.max() == 1
        assert labels == pytest.approx((raw - raw.min()) / (raw.max() - raw.min()), rel=1e-6)
    with pytest.raises(DatasetError, match="min-max normalisation is undefined"):
        normalise_labels(ds, [3])


def test_labels_outside_unit_interval_are_refused(tmp_path):
    root = build_fixture("gfiqa_20k", tmp_path)
    rows = list(csv.DictReader(open(root / "mos.csv")))
    write_csv(root / "mos.csv", ["img_name", "mos"], [[r["img_name"], float(r["mos"]) * 100] for r in rows])
    ds = load_dataset("gfiqa_20k", root)
    with pytest.raises(DatasetError, match=r"\[gfiqa_20k\] 12 of 12 labels fall outside \[0, 1\] \(labels [\d.]+ to"):
        normalise_labels(ds)
    assert load_dataset("gfiqa_20k", root, label_norm="minmax") is not None  # the paper's rule copes


def test_csv_kind_official_is_whole_file_minmax_and_never_flips(tmp_path):
    path = build_fixture("csv", tmp_path)
    better = load_dataset("mine", path)
    worse = load_dataset("mine", path, higher_is_better=False)
    raw = scores(better)
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    assert normalise_labels(better) == pytest.approx(expected, rel=1e-6)
    assert normalise_labels(worse) == pytest.approx(expected, rel=1e-6)  # polarity is metadata only
    assert (better.label_type, worse.label_type, worse.higher_is_better) == ("MOS", "DMOS", False)
    split = load_dataset("mine", path, label_norm="minmax")
    assert normalise_labels(split, [0, 1, 2]).max() == 1 and normalise_labels(split, [0, 1, 2]).min() == 0


def test_csv_kind_units_are_sorted_and_paths_relative_to_the_file(tmp_path):
    build_fixture("csv", tmp_path, n_refs=3, per_ref=2)
    rows = list(csv.reader(open(tmp_path / "labels.csv")))
    write_csv(tmp_path / "shuffled.csv", rows[0], rows[:0:-1])  # the same rows, reversed
    shuffled = load_dataset("mine", tmp_path / "shuffled.csv")
    assert shuffled.units == ["scene0", "scene1", "scene2"] and shuffled.split_by == "reference"
    assert shuffled.records[0].path == str(tmp_path / "images" / "scene2_1.png")
    write_csv(tmp_path / "no_ref.csv", ["image", "score"], [r[:2] for r in rows[:0:-1]])
    by_image = load_dataset("mine", tmp_path / "no_ref.csv")
    assert by_image.split_by == "image" and by_image.units == sorted(r.name for r in by_image.records)


# ---------------------------------------------------------------- errors

def test_unknown_key_lists_the_valid_keys(tmp_path):
    with pytest.raises(DatasetError, match=r"\[lvie\] unknown dataset key.*live, csiq, tid2013.*uwiqa"):
        load_dataset("lvie", tmp_path)


def test_missing_root_names_dataset_path_and_layout(tmp_path):
    with pytest.raises(DatasetError) as error:
        load_dataset("kadid", tmp_path / "nowhere")
    assert (error.value.dataset, error.value.path) == ("kadid", str(tmp_path / "nowhere"))
    assert "dataset root not found" in str(error.value) and "dmos.csv, images/" in str(error.value)


def test_missing_label_file(tmp_path):
    root = build_fixture("kadid", tmp_path)
    (root / "dmos.csv").unlink()
    with pytest.raises(DatasetError, match=r"\[kadid\] label file not found: .*dmos\.csv"):
        load_dataset("kadid", root)


def test_missing_image_and_missing_folder(tmp_path):
    root = build_fixture("agiqa_3k", tmp_path)
    (root / "img" / "AttnGAN_normal_003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"\[agiqa_3k\] 1 image problem.*img/AttnGAN_normal_003\.jpg"):
        load_dataset("agiqa_3k", root)
    assert len(load_dataset("agiqa_3k", root, check_images=False).records) == 12
    shutil.rmtree(root / "img")
    with pytest.raises(DatasetError, match=r"image folder not found: .*img \(12 labelled images"):
        load_dataset("agiqa_3k", root)


def test_corrupt_image_is_reported_by_verify_image(tmp_path):
    ds = load_dataset("uwiqa", build_fixture("uwiqa", tmp_path))
    Path(ds.records[0].path).write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"\[uwiqa\] image cannot be decoded.*0001\.png"):
        verify_image(ds.records[0].path, "uwiqa")


def test_wrong_columns(tmp_path):
    root = build_fixture("kadid", tmp_path)
    write_csv(root / "dmos.csv", ["dist_img", "ref_img", "mos"], [["I01_01_01.png", "I01.png", "4"]])
    with pytest.raises(DatasetError, match=r"columns \['dist_img', 'ref_img', 'mos'\], missing \['dmos'\]"):
        load_dataset("kadid", root)


def test_non_numeric_score_names_the_line(tmp_path):
    root = build_fixture("tid2013", tmp_path)
    lines = (root / "mos_with_names.txt").read_bytes().split(b"\r\n")
    lines[2] = b"five " + lines[2].split(b" ")[1]
    (root / "mos_with_names.txt").write_bytes(b"\r\n".join(lines))
    with pytest.raises(DatasetError, match=r"\[tid2013\] line 3: score 'five' is not a finite number"):
        load_dataset("tid2013", root)


def test_wrong_row_counts(tmp_path):
    write_live_labels(tmp_path / "live", [30.0] * 981, [30.0] * 981, [0] * 981, ["a.bmp"] * 981)
    with pytest.raises(DatasetError, match=r"'dmos' has 981 entries.*expected 982"):
        load_dataset("live", tmp_path / "live", check_images=False)
    write_livec_labels(tmp_path / "livec", ["3.bmp", "4.bmp"], [40.0])
    with pytest.raises(DatasetError, match=r"AllImages_release has 9 entries but AllMOS_release has 8"):
        load_dataset("livec", tmp_path / "livec", check_images=False)


def test_one_image_under_several_spellings_is_one_image(tmp_path, capsys):
    """./images/x.png, images//x.png and IMAGES/X.png name one file (images are found ignoring case): with different
    scores they put one image on both sides of a by-image split, so they are refused as a repeated label, by the
    loaders and by `promptiqa check`; a label written in NFC finds a file whose name was saved in NFD (macOS)."""
    import unicodedata

    from promptiqa.cli import main

    images = tmp_path / "images"
    images.mkdir()
    rows = [[f"images/{i}.png", str(i)] for i in range(6)]
    for name, _ in rows:
        (tmp_path / name).write_bytes(b"")
    spelt = rows + [["./images/0.png", "9"], ["images//0.png", "8"], ["IMAGES/0.PNG", "7"]]
    write_csv(tmp_path / "labels.csv", ["image", "score"], spelt)
    with pytest.raises(DatasetError, match=r"1 image\(s\) are labelled more than once, e\.g\. 'IMAGES/0\.PNG' and "
                                           r"'images/0\.png': .*names that differ only in letter case"):
        load_dataset("mine", tmp_path / "labels.csv", check_images=False)
    assert main(["check", "--dataset", "mine", "--root", str(tmp_path / "labels.csv"), "--no-images"]) == 1
    assert "PROBLEM" in (out := capsys.readouterr().out) and "labelled more than once" in out
    # NFC in the label file, NFD on disk: found (and the name is kept in its canonical NFC spelling)
    nfd = unicodedata.normalize("NFD", "café.png")
    (images / nfd).write_bytes(b"")
    write_csv(tmp_path / "accents.csv", ["image", "score"], rows + [[unicodedata.normalize("NFC", "./images/café.png"),
                                                                     "2.5"]])
    from promptiqa.data.registry import locate_images

    dataset, problems = locate_images(load_dataset("mine", tmp_path / "accents.csv", check_images=False))
    assert not [p for p in problems if "not found" in p], problems
    found = next(r for r in dataset.records if r.name.startswith("images/caf"))
    assert found.name == unicodedata.normalize("NFC", "images/café.png") and Path(found.path).name == nfd


def test_malformed_csv_kind_files(tmp_path):
    write_csv(tmp_path / "a.csv", ["image", "score", "reference"], [["x.png", "1", "s"], ["y.png", "2", ""]])
    with pytest.raises(DatasetError, match=r"line 3: the reference column is empty"):
        load_dataset("mine", tmp_path / "a.csv", check_images=False)
    write_csv(tmp_path / "b.csv", ["image", "score"], [["x.png", "1"], ["x.png", "2"]])
    with pytest.raises(DatasetError, match=r"1 image\(s\) are labelled more than once, e.g. 'x\.png'"):
        load_dataset("mine", tmp_path / "b.csv", check_images=False)
    write_csv(tmp_path / "c.csv", ["image", "score"], [["x.png", "3"], ["y.png", "3"]])
    with pytest.raises(DatasetError, match="every score equals 3"):
        load_dataset("mine", tmp_path / "c.csv", check_images=False)
    with pytest.raises(DatasetError, match="built-in key"):
        load_dataset("live", tmp_path / "c.csv")
    with pytest.raises(DatasetError, match=r"\[mine\] label file not found"):
        load_dataset("mine", tmp_path / "absent.csv")


def test_unknown_option_and_label_norm(tmp_path):
    root = build_fixture("bid", tmp_path, images=False)
    with pytest.raises(DatasetError, match=r"unknown loader option\(s\) \['label_file'\]"):
        load_dataset("bid", root, check_images=False, label_file="x.csv")
    with pytest.raises(DatasetError, match="unknown label_norm 'paper'"):
        load_dataset("bid", root, label_norm="paper")


def test_reference_folder_is_filtered_strictly_and_compared(tmp_path):
    root = build_fixture("tid2013", tmp_path)
    (root / "reference_images" / "Thumbs").write_bytes(b"")  # extensionless: ignored, unlike the official test
    assert len(load_dataset("tid2013", root).units) == 3
    build_fixture("tid2013", tmp_path / "other", n_refs=4)
    shutil.copy(tmp_path / "other" / "reference_images" / "i04.bmp", root / "reference_images" / "I04.bmp")
    with pytest.raises(DatasetError, match=r"reference image .*I04\.bmp has no labelled images"):
        load_dataset("tid2013", root)
    shutil.rmtree(root / "reference_images")
    with pytest.raises(DatasetError, match="reference folder not found"):
        load_dataset("tid2013", root)


# ---------------------------------------------------------------- where the roots are

def test_parse_data_root_args():
    assert parse_data_root_args(["live=/d/live", "mine=/x/labels.csv"]) == {"live": "/d/live",
                                                                             "mine": "/x/labels.csv"}
    with pytest.raises(DatasetError, match="malformed --data_root value 'live'"):
        parse_data_root_args(["live"])
    with pytest.raises(DatasetError, match="given twice"):
        parse_data_root_args(["live=/a", "live=/b"])


def test_resolve_roots_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"live": "cfg/live", "csiq": "cfg/csiq", "mine": "cfg/mine.csv"}
    keys = ["live", "csiq", "kadid", "mine"]
    roots = resolve_roots(keys, config=config, overrides=["csiq=/over/csiq"], env={})
    assert roots == {"live": str(tmp_path / "cfg/live"), "csiq": "/over/csiq", "kadid": str(tmp_path / "data/kadid"),
                     "mine": str(tmp_path / "cfg/mine.csv")}
    roots = resolve_roots(keys, config=config, overrides=["csiq=/over/csiq"], env={"PROMPTIQA_DATA": "/datasets"})
    assert roots == {"live": "/datasets/live", "csiq": "/over/csiq", "kadid": "/datasets/kadid",
                     "mine": str(tmp_path / "cfg/mine.csv")}
    assert resolve_roots(["own"], config={}, overrides=["own=l.csv"], env={}) == {"own": str(tmp_path / "l.csv")}
    with pytest.raises(DatasetError, match=r"unknown dataset key.*live, csiq"):
        resolve_roots(["kadid"], config={}, overrides=["kadidd=/x"], env={})
    with pytest.raises(DatasetError, match="unknown dataset key"):
        resolve_roots(["nope"], config={}, env={})


def test_default_config_lists_every_key_under_data(tmp_path, monkeypatch):
    entries = yaml.safe_load((REPO / "configs" / "datasets.yaml").read_text())
    assert entries == {key: f"data/{key}" for key in DATASET_KEYS}
    monkeypatch.chdir(tmp_path)  # no configs/ here: the repository's file is found instead
    assert resolve_roots(["uwiqa"], env={}) == {"uwiqa": str(tmp_path / "data" / "uwiqa")}
    (tmp_path / "mine.yaml").write_text("uwiqa: /elsewhere/uwiqa\n")
    assert resolve_roots(["uwiqa"], config=tmp_path / "mine.yaml", env={}) == {"uwiqa": "/elsewhere/uwiqa"}
