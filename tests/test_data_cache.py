"""The memory-mapped image cache, its CLI, the SPAQ resize script and the data benchmark script, on tiny fixtures."""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from promptiqa.cli import main as cli_main
from promptiqa.data import cache, images
from promptiqa.data.records import DatasetRecords, Record

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_ds(tmp_path) -> DatasetRecords:
    """Five small images of different sizes and formats under tmp_path/data."""
    rng = np.random.default_rng(1)
    records = []
    for k, (h, w, suffix) in enumerate([(30, 40, ".png"), (48, 32, ".jpg"), (17, 23, ".bmp"), (64, 64, ".png"),
                                        (40, 90, ".jpg")]):
        path = tmp_path / "data" / f"img{k}{suffix}"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
        records.append(Record(path.name, str(path), 10.0 * k, None))
    return DatasetRecords("toy", str(tmp_path / "data"), records, "image", [r.name for r in records],
                          "MOS", True, "official", 0.0, 100.0)


def test_cache_holds_the_resized_images_and_records(tiny_ds, tmp_path):
    path = cache.prepare_cache(tiny_ds, 32, tmp_path / "cache")
    assert path == tmp_path / "cache" / "toy_32"
    c = cache.ImageCache(path)
    assert len(c) == 5 and c.names == [r.name for r in tiny_ds.records] and c.image_size == 32
    for i, r in enumerate(tiny_ds.records):
        assert np.array_equal(c[i], images.read_image(r.path, 32))
    meta = json.loads((path / "records.json").read_text())
    assert meta["scores"] == [0.0, 10.0, 20.0, 30.0, 40.0] and meta["root"] == tiny_ds.root
    assert meta["references"] == [None] * 5 and len(meta["fingerprint"]) == 64
    assert np.load(path / "images.npy", mmap_mode="r").shape == (5, 32, 32, 3)


def test_cached_and_direct_samples_are_bit_identical(tiny_ds, tmp_path):
    cache.prepare_cache(tiny_ds, 32, tmp_path / "cache", workers=2)
    source = cache.open_image_source(tiny_ds, 32, tmp_path / "cache")
    assert isinstance(source, cache.ImageCache)
    labels = np.linspace(0, 1, 5)
    direct = images.IQAImages([r.path for r in tiny_ds.records], labels, image_size=32)
    cached = images.IQAImages(source, labels, image_size=32)
    for i in range(5):
        a, b = direct[i], cached[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]


def test_stale_cache_is_refused_with_a_reason(tiny_ds, tmp_path):
    path = cache.prepare_cache(tiny_ds, 32, tmp_path / "cache")
    changed = Path(tiny_ds.records[2].path)
    cv2.imwrite(str(changed), np.zeros((20, 20, 3), np.uint8))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    with pytest.raises(cache.StaleCacheError, match="stale.*'toy'.*prepare it again"):
        cache.ImageCache(path).check(tiny_ds, 32)
    with pytest.warns(UserWarning, match="refusing the image cache"):
        source = cache.open_image_source(tiny_ds, 32, tmp_path / "cache")
    assert isinstance(source, images.DiskImages)
    assert np.array_equal(source[2], images.read_image(changed, 32))
    # preparing again rebuilds it, and it is trusted again
    cache.prepare_cache(tiny_ds, 32, tmp_path / "cache")
    assert np.array_equal(cache.ImageCache(path)[2], np.zeros((32, 32, 3), np.uint8))
    assert isinstance(cache.open_image_source(tiny_ds, 32, tmp_path / "cache"), cache.ImageCache)


def test_cache_for_other_records_or_size_is_refused(tiny_ds, tmp_path):
    path = cache.prepare_cache(tiny_ds, 32, tmp_path / "cache")
    with pytest.raises(cache.StaleCacheError, match="32px images, 48px requested"):
        cache.ImageCache(path).check(tiny_ds, 48)
    fewer = DatasetRecords("toy", tiny_ds.root, tiny_ds.records[:4], "image", tiny_ds.units[:4], "MOS", True,
                           "official")
    with pytest.raises(cache.StaleCacheError, match="other records.*5 cached, 4 now"):
        cache.ImageCache(path).check(fewer, 32)
    os.remove(tiny_ds.records[0].path)
    with pytest.raises(cache.StaleCacheError, match="not found: .*img0.png"):
        cache.ImageCache(path).check(tiny_ds, 32)
    with pytest.raises(FileNotFoundError, match="img0.png"):
        cache.prepare_cache(tiny_ds, 16, tmp_path / "cache")


def test_missing_cache_falls_back_to_disk_with_a_hint(tiny_ds, tmp_path):
    assert isinstance(cache.open_image_source(tiny_ds, 32), images.DiskImages)
    with pytest.warns(UserWarning, match="python -m promptiqa prepare --dataset toy"):
        source = cache.open_image_source(tiny_ds, 32, tmp_path / "nowhere")
    assert isinstance(source, images.DiskImages) and len(source) == 5


def test_training_on_a_gpu_without_a_cache_warns_how_to_make_one(tiny_ds, tmp_path, recwarn):
    assert isinstance(cache.open_image_source(tiny_ds, 32, feeds_gpu=False), images.DiskImages) and not recwarn
    hint = (f"no --cache_dir: 'toy' is decoded from disk every epoch, which starves a GPU .*python -m promptiqa "
            f"prepare --dataset toy --root {re.escape(tiny_ds.root)} --cache_dir data/cache --image_size 32 -j 8, then "
            f"train with --cache_dir data/cache")
    with pytest.warns(UserWarning, match=hint):
        assert isinstance(cache.open_image_source(tiny_ds, 32, feeds_gpu=True), images.DiskImages)
    cache.prepare_cache(tiny_ds, 32, tmp_path / "cache")
    recwarn.clear()
    assert isinstance(cache.open_image_source(tiny_ds, 32, tmp_path / "cache", feeds_gpu=True), cache.ImageCache)
    assert not recwarn   # a valid cache: nothing to say


def test_the_paper_configs_train_from_the_image_cache():
    from promptiqa.config import load_yaml

    for name in ("paper.yaml", "paper_fast.yaml"):
        text = (SCRIPTS.parent / "configs" / name).read_text()
        assert load_yaml(SCRIPTS.parent / "configs" / name)["cache_dir"] == "data/cache"
        assert "python -m promptiqa prepare --dataset $d --root data/$d --cache_dir data/cache" in text
    assert set(re.search(r"for d in ([\w ]+); do", text).group(1).split()) == set(load_yaml(
        SCRIPTS.parent / "configs" / "paper.yaml")["dataset"])   # the loop prepares every dataset of the run


def test_prepare_skips_an_up_to_date_cache(tiny_ds, tmp_path):
    path = cache.prepare_cache(tiny_ds, 32, tmp_path / "cache")
    before = (path / "images.npy").stat().st_mtime_ns
    cache.prepare_cache(tiny_ds, 32, tmp_path / "cache")
    assert (path / "images.npy").stat().st_mtime_ns == before
    assert not (path / "images.npy.tmp").exists()


def test_workers_map_the_cache_instead_of_receiving_pixels(tiny_ds, tmp_path):
    c = cache.ImageCache(cache.prepare_cache(tiny_ds, 64, tmp_path / "cache"))
    c[0]
    assert len(pickle.dumps(c)) < 5 * 64 * 64 * 3
    loader = DataLoader(images.IQAImages(c, np.zeros(5), image_size=64), batch_size=5, num_workers=2)
    (batch, _, index), = list(loader)
    assert index.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(batch[3], images.to_chw(images.read_image(tiny_ds.records[3].path, 64)))


def test_prepare_cli_loads_the_dataset_from_the_registry(tiny_ds, tmp_path, monkeypatch, capsys):
    calls = []
    fake = types.ModuleType("promptiqa.data.registry")
    fake.load_dataset = lambda key, root: calls.append((key, root)) or tiny_ds
    monkeypatch.setitem(sys.modules, "promptiqa.data.registry", fake)
    assert cli_main(["prepare", "--dataset", "toy", "--root", tiny_ds.root, "--cache_dir", str(tmp_path / "c"),
                     "--image_size", "16", "-j", "2"]) == 0
    assert calls == [("toy", tiny_ds.root)]
    assert len(cache.ImageCache(tmp_path / "c" / "toy_16")) == 5
    assert "5 images at 16px" in capsys.readouterr().out


def test_data_benchmark_prints_its_table_and_enforces_min_speedup(capsys):
    # How much faster the cache is depends on the machine and its load: the benchmark measures and, given
    # --min_speedup, checks it (docs/datasets.md, "Image cache"); here only that the script runs and reports in one
    # line.
    bench = load_script("benchmark_data")
    assert bench.main(["-n", "2", "--repeats", "1"]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert re.match(r"\| 2 \| 1024x768 \| 224 \| [\d.]+ \| [\d.]+ \| [\d.]+x \| \d+ us/img \([\d.]+%\) \| [\d.]+ \| "
                    r"0\.29 \|$", row), row                   # the loader's batch: 2 uint8 images of 3 x 224 x 224
    assert bench.main(["-n", "2", "--repeats", "1", "--min_speedup", "1e9"]) == 1
    err = capsys.readouterr().err.strip().splitlines()   # the cache's progress bar, then the error
    assert re.fullmatch(r"error: the cache is [\d.]+x the direct path, below --min_speedup 1e\+09", err[-1]), err
    assert sum(line.startswith("error:") for line in err) == 1


@pytest.mark.parametrize("h, w, expected", [(600, 800, (512, 683)), (3000, 4000, (512, 683)),
                                            (4000, 3000, (683, 512)), (512, 900, None), (400, 900, None)])
def test_spaq_target_size_keeps_aspect(h, w, expected):
    assert load_script("resize_spaq").target_size(h, w, 512) == expected


def test_resize_spaq_script(tmp_path, capsys):
    src, dst = tmp_path / "TestImage", tmp_path / "img_resize"
    src.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(src / "00001.jpg"), rng.integers(0, 256, size=(600, 800, 3), dtype=np.uint8))
    cv2.imwrite(str(src / "00002.jpg"), rng.integers(0, 256, size=(400, 900, 3), dtype=np.uint8))
    script = load_script("resize_spaq")
    assert script.main([str(src), str(dst), "-j", "2"]) == 0
    assert cv2.imread(str(dst / "00001.jpg")).shape == (512, 683, 3)
    assert (dst / "00002.jpg").read_bytes() == (src / "00002.jpg").read_bytes()
    assert "1 resized, 1 copied unchanged" in capsys.readouterr().out
    script.main([str(src), str(dst)])
    assert "2 already present" in capsys.readouterr().out


def test_registry_split_isp_and_cache_fit_together(tmp_path):
    from promptiqa.data import load_dataset, normalise_labels
    from promptiqa.data.sampling import sample_isps
    from promptiqa.data.splits import make_split, official_train_order
    from tests.fixtures.datasets import build_fixture

    root = build_fixture("csiq", tmp_path / "csiq", n_refs=5, per_ref=4)
    assert cli_main(["prepare", "--dataset", "csiq", "--root", str(root), "--cache_dir", str(tmp_path / "cache"),
                     "--image_size", "32"]) == 0
    ds = load_dataset("csiq", root)
    split = make_split(ds, 2024)
    assert (len(split.train_units), len(split.test_units)) == (4, 1)
    labels = normalise_labels(ds, split.train_indices)
    prompts = [split.train_indices[p] for p in sample_isps(labels, 5, order=official_train_order(ds, split))]
    scores = [ds.records[i].score for i in prompts]
    assert scores[0] == min(ds.records[i].score for i in split.train_indices) and scores == sorted(scores)
    source = cache.open_image_source(ds, 32, tmp_path / "cache")
    assert isinstance(source, cache.ImageCache)
    cached = images.IQAImages(source, normalise_labels(ds, split.test_indices), 32, indices=split.test_indices)
    direct = images.IQAImages([ds.records[i].path for i in split.test_indices],
                              normalise_labels(ds, split.test_indices), 32)
    assert all(torch.equal(cached[k][0], direct[k][0]) for k in range(len(direct)))
