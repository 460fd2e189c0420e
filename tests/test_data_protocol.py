"""Splits, ISP sampling, training groups / test shards and the image pipeline, on tiny hand-built fixtures."""
from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from promptiqa.data import groups, images, sampling, splits
from promptiqa.data.records import DatasetRecords, Record
from promptiqa.engine.augment import flip_batch

REPO = Path(__file__).resolve().parents[1]


def synthetic_ds(tmp_path=None, key="toy", refs=("ref_a", "ref_b", "ref_c", "ref_d", "ref_e"), per_ref=3,
                 split_by="reference") -> DatasetRecords:
    """A dataset of refs x per_ref distorted images, records listed distortion-major so units interleave."""
    records = []
    for d in range(per_ref):
        for ref in refs:
            name = f"dist/{ref}_{d}.png"
            path = str(tmp_path / name) if tmp_path else f"/nonexistent/{name}"
            records.append(Record(name, path, float(len(records)), ref))
    units = list(refs) if split_by == "reference" else [r.name for r in records]
    return DatasetRecords(key, "/nonexistent", records, split_by, units, "MOS", True, "official")


# ----------------------------------------------------------------------------------------------- splits

def test_split_seeds_live_in_one_place_with_the_official_seed_first():
    assert splits.OFFICIAL_SEED == 2024
    assert splits.SPLIT_SEEDS[0] == 2024
    assert len(splits.SPLIT_SEEDS) == len(set(splits.SPLIT_SEEDS)) == 10


@pytest.mark.parametrize("n, n_train, n_test", [
    (29, 23, 6), (30, 24, 6), (25, 20, 5), (81, 65, 16), (586, 469, 117), (11125, 8900, 2225),
    (1162, 930, 232), (10073, 8058, 2015), (19998, 15998, 4000), (2982, 2386, 596), (2400, 1920, 480),
    (890, 712, 178)])
def test_split_sizes_are_the_official_ones(n, n_train, n_test):
    train, test = splits.split_units([f"u{i}" for i in range(n)], 2024)
    assert (len(train), len(test)) == (n_train, n_test)
    assert sorted(train + test, key=lambda u: int(u[1:])) == [f"u{i}" for i in range(n)]


def test_split_reproduces_the_official_shuffle_without_touching_global_random():
    units = [f"u{i}" for i in range(10)]
    train, test = splits.split_units(units, 2024)
    # Official: random.seed(2024); random.shuffle(list(range(10))); first int(round(8.0)) are train.
    assert train == [f"u{i}" for i in (6, 0, 9, 8, 3, 5, 1, 4)]
    assert test == ["u2", "u7"]
    random.seed(7)
    expected_next = random.random()
    random.seed(7)
    for seed in splits.SPLIT_SEEDS:
        order = list(range(29))
        random.Random(seed).shuffle(order)
        assert splits.split_units(list(range(29)), seed) == (order[:23], order[23:])
    assert random.random() == expected_next


def test_reference_split_keeps_every_image_of_a_reference_on_one_side():
    ds = synthetic_ds()
    split = splits.make_split(ds, 2024)
    assert (split.train_units, split.test_units) == splits.split_units(ds.units, 2024)
    assert (split.key, split.seed, split.split_by) == ("toy", 2024, "reference")
    assert split.train_indices == sorted(split.train_indices)
    assert sorted(split.train_indices + split.test_indices) == list(range(len(ds.records)))
    for i in split.train_indices:
        assert ds.records[i].reference in split.train_units
    for i in split.test_indices:
        assert ds.records[i].reference in split.test_units
    assert len(split.train_indices) == 3 * len(split.train_units) == 12


def test_image_split_uses_image_names():
    ds = synthetic_ds(split_by="image")
    split = splits.make_split(ds, 3)
    assert len(split.train_units) == 12 and len(split.test_units) == 3
    assert [ds.records[i].name for i in split.test_indices] == sorted(split.test_units,
                                                                      key=[r.name for r in ds.records].index)


def test_split_file_names_units_and_survives_reordering(tmp_path):
    ds = synthetic_ds(key="csiq")
    path = tmp_path / "run" / "splits.json"
    splits.save_splits(path, {"csiq": splits.make_split(ds, 2025)})
    payload = json.loads(path.read_text())
    assert payload["version"] == splits.SPLIT_FILE_VERSION
    assert set(payload["splits"]["csiq"]["train"]) <= {"ref_a", "ref_b", "ref_c", "ref_d", "ref_e"}
    assert payload["splits"]["csiq"]["seed"] == 2025

    # The same dataset enumerated in another order (e.g. another machine's listdir): same images per side.
    shuffled = synthetic_ds(key="csiq", refs=("ref_e", "ref_c", "ref_a", "ref_d", "ref_b"))
    shuffled.records.reverse()
    original = splits.make_split(ds, 2025)
    again = splits.resolve_split(shuffled, split_file=path)
    assert again.seed == 2025
    assert {shuffled.records[i].name for i in again.train_indices} == \
           {ds.records[i].name for i in original.train_indices}


def test_split_file_errors_are_clear(tmp_path):
    ds = synthetic_ds(key="csiq")
    path = tmp_path / "splits.json"
    splits.save_splits(path, {"live": splits.make_split(synthetic_ds(key="live"), 1)})
    with pytest.raises(splits.SplitError, match="no split for dataset 'csiq'.*live"):
        splits.resolve_split(ds, split_file=path)
    with pytest.raises(ValueError, match="either a split seed or a split file"):
        splits.resolve_split(ds, seed=1, split_file=path)
    with pytest.raises(ValueError, match="not in the dataset.*'ref_z'"):
        splits.split_from_units(ds, ["ref_a", "ref_b", "ref_c", "ref_z"], ["ref_d", "ref_e"])
    with pytest.raises(ValueError, match="neither side.*'ref_e'"):
        splits.split_from_units(ds, ["ref_a", "ref_b", "ref_c"], ["ref_d"])
    with pytest.raises(ValueError, match="both the train and the test side"):
        splits.split_from_units(ds, ["ref_a", "ref_b", "ref_c", "ref_d"], ["ref_d", "ref_e"])
    path.write_text(json.dumps({"format": "promptiqa-splits", "version": 99, "splits": {}}))
    with pytest.raises(ValueError, match="version 99"):
        splits.load_splits(path)


def test_validation_part_comes_out_of_the_train_side_by_unit(tmp_path):
    refs = tuple(f"ref_{i:02d}" for i in range(20))
    for ds in (synthetic_ds(refs=refs), synthetic_ds(refs=refs, split_by="image")):
        plain = splits.make_split(ds, 2027)
        carved = splits.resolve_split(ds, seed=2027, val_fraction=0.25)
        n = len(plain.train_units)                     # 16 references, or 48 images
        assert len(carved.val_units) == int(round(0.25 * n))
        # the tail of the seed's shuffled train units: deterministic, no random stream of its own
        assert carved.train_units + carved.val_units == plain.train_units
        assert carved.test_units == plain.test_units and carved.test_indices == plain.test_indices
        assert not set(carved.train_indices) & set(carved.val_indices)
        assert sorted(carved.train_indices + carved.val_indices) == plain.train_indices
        for i in carved.val_indices:                   # every image of a validation unit, and only those
            unit = ds.records[i].reference if ds.split_by == "reference" else ds.records[i].name
            assert unit in carved.val_units
        assert splits.resolve_split(ds, seed=2027, val_fraction=0.25) == carved
        assert splits.resolve_split(ds, seed=2027, val_fraction=0.0) == plain
        # the train order (ISP ties, the official first epoch) lists the remaining train units only
        order = splits.official_train_order(ds, carved)
        assert sorted(order) == list(range(len(carved.train_indices)))

    # recorded in the split file, which reproduces it; a file without one is written as before
    ds = synthetic_ds(key="csiq", refs=refs)
    carved = splits.resolve_split(ds, seed=2027, val_fraction=0.25)
    path = tmp_path / "splits.json"
    splits.save_splits(path, {"csiq": carved})
    assert json.loads(path.read_text())["splits"]["csiq"]["val"] == carved.val_units
    assert splits.resolve_split(ds, split_file=path) == carved
    assert splits.resolve_split(ds, split_file=path, val_fraction=0.25) == carved
    with pytest.raises(splits.SplitError, match=r"holds a validation part of 4 of the 16 training units of csiq, not "
                                                r"what --val_fraction 0.5 gives \(8\); drop --val_fraction"):
        splits.resolve_split(ds, split_file=path, val_fraction=0.5)
    splits.save_splits(path, {"csiq": splits.make_split(ds, 2027)})
    assert "val" not in json.loads(path.read_text())["splits"]["csiq"]
    assert splits.resolve_split(ds, split_file=path, val_fraction=0.25) == carved   # carved from the file's train
    with pytest.raises(splits.SplitError, match="units on both the train and the validation side"):
        splits.split_from_units(ds, carved.train_units, carved.test_units, val_units=carved.train_units[:1])


@pytest.mark.parametrize("fraction,message", [
    (0.02, r"--val_fraction 0.02 leaves 4 training and 0 validation units of the 4 training units of toy \(split by "
           r"reference\); each side needs at least one, so 4 x F must round to between 1 and 3"),
    (0.9, "leaves 0 training and 4 validation units"),
    (1.0, "--val_fraction must be above 0 and below 1, got 1.0"),
])
def test_validation_fraction_that_leaves_a_side_empty_is_refused(fraction, message):
    with pytest.raises(splits.SplitError, match=message):
        splits.resolve_split(synthetic_ds(), seed=2024, val_fraction=fraction)
    by_image = synthetic_ds(refs=("ref_a",), per_ref=4, split_by="image")   # 3 train images: 1 validation image
    with pytest.raises(splits.SplitError, match="validation part of a single image; it needs at least 2"):
        splits.resolve_split(by_image, seed=2024, val_fraction=0.3)


def test_resolve_split_defaults_to_the_official_seed():
    ds = synthetic_ds()
    assert splits.resolve_split(ds) == splits.make_split(ds, 2024)


def test_official_train_order_lists_shuffled_units_except_for_label_file_kinds():
    ds = synthetic_ds()
    split = splits.make_split(ds, 2024)
    order = splits.official_train_order(ds, split)   # positions into split.train_indices
    assert sorted(order) == list(range(len(split.train_indices)))
    assert [ds.records[split.train_indices[p]].reference for p in order] == \
           [u for u in split.train_units for _ in range(3)]
    for key in ("kadid", "spaq", "uwiqa"):   # their official classes filter the label file's rows
        other = synthetic_ds(key=key)
        assert splits.official_train_order(other, splits.make_split(other, 2024)) == list(range(12))


# ----------------------------------------------------------------------------------------- ISP sampling

LABELS = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0])  # ascending order: 9 1 5 3 7 0 8 4 6 2


@pytest.mark.parametrize("n, expected", [
    (2, [9, 2]),                            # the lowest and the highest
    (3, [9, 6, 2]),                         # step (10-2)//1 = 8: positions 0, 8, 9
    (4, [9, 7, 6, 2]),                      # step 4: positions 0, 4, 8, 9 (the last two adjacent)
    (5, [9, 5, 7, 8, 2]),                   # step 8//3 = 2: positions 0, 2, 4, 6, 9
    (10, [9, 1, 5, 3, 7, 0, 8, 4, 6, 2]),   # all of them, lowest to highest
])
def test_interval_sampling_takes_the_official_positions(n, expected):
    assert sampling.sample_isps(LABELS, n).tolist() == expected


def test_interval_sampling_skips_the_second_to_last_when_the_step_is_one():
    labels = np.arange(11)[::-1] / 10  # index 10 is the lowest, index 0 the highest
    # step (11-2)//8 = 1: positions 0..8, then 10; position 9 (index 1) is never taken, as in the official code.
    assert sampling.sample_isps(labels, 10).tolist() == [10, 9, 8, 7, 6, 5, 4, 3, 2, 0]


def test_interval_sampling_breaks_ties_in_the_given_order():
    assert sampling.sample_isps([0.2, 0.1, 0.2, 0.1, 0.2], 3).tolist() == [1, 2, 4]


def test_random_sampling_is_seeded_and_draws_distinct_images():
    labels = np.linspace(0, 1, 50)
    a = sampling.sample_isps(labels, 10, "random", seed=1)
    assert a.tolist() == sampling.sample_isps(labels, 10, "random", seed=1).tolist()
    assert a.tolist() != sampling.sample_isps(labels, 10, "random", seed=2).tolist()
    assert len(set(a.tolist())) == 10 and a.min() >= 0 and a.max() < 50


def test_sampling_errors_are_clear():
    with pytest.raises(ValueError, match="only 3 images"):
        sampling.sample_isps([0.1, 0.2, 0.3], 4)
    with pytest.raises(ValueError, match="at least 2"):
        sampling.sample_isps(LABELS, 1)
    with pytest.raises(ValueError, match="needs a seed"):
        sampling.sample_isps(LABELS, 3, "random")
    with pytest.raises(ValueError, match="unknown ISP sampling strategy 'fix'"):
        sampling.sample_isps(LABELS, 3, "fix")


# ------------------------------------------------------------------------------- training groups, shards

def test_groups_come_from_one_dataset_and_drop_each_incomplete_group():
    sampler = groups.GroupSampler([23, 10, 5], group_size=5, seed=0)
    all_groups = sampler.epoch_groups(0)
    assert len(all_groups) == 4 + 2 + 1 == len(sampler)
    per_dataset = {0: [], 1: [], 2: []}
    for group in all_groups:
        assert len(group) == 5 and len({d for d, _ in group}) == 1
        per_dataset[group[0][0]].extend(i for _, i in group)
    for d, size in enumerate([23, 10, 5]):
        assert len(per_dataset[d]) == len(set(per_dataset[d])) == size - size % 5
        assert set(per_dataset[d]) <= set(range(size))
    # groups of different datasets are mixed, not served dataset by dataset
    assert [g[0][0] for g in all_groups] != sorted(g[0][0] for g in all_groups)


def test_grouping_is_a_pure_function_of_seed_and_epoch():
    a = groups.GroupSampler([40, 17], 4, seed=3)
    b = groups.GroupSampler([40, 17], 4, seed=3, rank=1, world_size=2)
    assert a.epoch_groups(5) == b.epoch_groups(5)
    assert a.epoch_groups(0) != a.epoch_groups(1)
    assert a.epoch_groups(0) != groups.GroupSampler([40, 17], 4, seed=4).epoch_groups(0)
    a.set_epoch(2)
    assert list(a) == a.epoch_groups(2)


def test_the_official_first_epoch_cuts_each_dataset_order_into_consecutive_runs():
    orders = [[4, 0, 9, 2, 7, 1, 8, 3, 6, 5, 10], [2, 0, 1, 6, 5, 4, 3]]   # official sample orders (positions)
    official = groups.GroupSampler([11, 7], 3, seed=5, first_orders=orders)
    first = official.epoch_groups(0)
    # dataset 0: runs [4, 0, 9], [2, 7, 1], [8, 3, 6] (5, 10 left over); dataset 1: [2, 0, 1], [6, 5, 4] (3 left)
    expected = {(0, (4, 0, 9)), (0, (2, 7, 1)), (0, (8, 3, 6)), (1, (2, 0, 1)), (1, (6, 5, 4))}
    assert {(g[0][0], tuple(i for _, i in g)) for g in first} == expected
    assert [g[0][0] for g in first] != sorted(g[0][0] for g in first)          # still mixed across datasets
    # regrouped at random from epoch 2 on, exactly as without first_orders; a pure function for every rank
    shuffled = groups.GroupSampler([11, 7], 3, seed=5)
    assert [official.epoch_groups(e) for e in (1, 2)] == [shuffled.epoch_groups(e) for e in (1, 2)]
    assert shuffled.epoch_groups(0) != first
    rank1 = groups.GroupSampler([11, 7], 3, seed=5, rank=1, world_size=2, first_orders=orders)
    rank1.set_epoch(0, start_index=1)
    assert list(rank1) == first[1:4:2][1:]
    with pytest.raises(ValueError, match="first_orders"):
        groups.GroupSampler([11, 7], 3, seed=5, first_orders=[orders[0], [0, 1, 2]])


def test_ranks_take_strided_groups_and_equal_step_counts():
    world = 3
    samplers = [groups.GroupSampler([23, 10, 5], 5, seed=1, rank=r, world_size=world) for r in range(world)]
    everything = samplers[0].epoch_groups(4)  # 7 groups: 2 per rank, the 7th dropped
    for r, s in enumerate(samplers):
        s.set_epoch(4)
        assert len(s) == 2
        assert list(s) == [everything[r], everything[r + world]]
    served = [g for s in samplers for g in s]
    assert sorted(map(tuple, map(tuple, served))) == sorted(map(tuple, map(tuple, everything[:6])))


def test_resume_mid_epoch_continues_with_the_same_groups():
    sampler = groups.GroupSampler([30, 30], 3, seed=9, rank=1, world_size=2)
    sampler.set_epoch(7)
    full = list(sampler)
    sampler.set_epoch(7, start_index=4)
    assert len(sampler) == len(full) - 4
    assert list(sampler) == full[4:]
    with pytest.raises(ValueError, match="start_index"):
        sampler.set_epoch(7, start_index=len(full) + 1)


def test_group_sampler_errors():
    with pytest.raises(ValueError, match=r"\(1, 4\)"):
        groups.GroupSampler([20, 4], 5, seed=0)
    with pytest.raises(ValueError, match="rank"):
        groups.GroupSampler([20], 5, seed=0, rank=2, world_size=2)


def test_group_sampler_feeds_a_data_loader_one_dataset_per_batch():
    sources = [[np.full((8, 8, 3), 10 * d + i, np.uint8) for i in range(n)] for d, n in enumerate([7, 9])]
    datasets = [images.IQAImages(src, np.arange(len(src)) + 100 * d, image_size=8) for d, src in enumerate(sources)]
    loader = DataLoader(groups.MultiDataset(datasets), batch_sampler=groups.GroupSampler([7, 9], 3, seed=0))
    batches = list(loader)
    assert len(batches) == 2 + 3
    for image, label, index, dataset_idx in batches:
        assert image.shape == (3, 3, 8, 8) and len(set(dataset_idx.tolist())) == 1
        d = int(dataset_idx[0])
        assert label.tolist() == (index + 100 * d).float().tolist()


@pytest.mark.parametrize("n, world", [(10, 3), (2, 3), (9, 1)])
def test_test_shards_cover_every_image_once_without_padding(n, world):
    shards = [list(groups.TestShardSampler(n, r, world)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert [len(groups.TestShardSampler(n, r, world)) for r in range(world)] == [len(s) for s in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


# ---------------------------------------------------------------------------------------- image pipeline

def official_style_tensor(path, size):
    """The official order of operations, written out: BGR uint8 resize, RGB, float32 /255, CHW, (x-0.5)/0.5."""
    bgr = cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), (size, size), interpolation=cv2.INTER_CUBIC)
    x = np.transpose(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype("float32") / 255, (2, 0, 1))
    return torch.from_numpy((x - 0.5) / 0.5).float()


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_image_pipeline_is_bit_identical_to_the_official_one(tmp_path, suffix):
    rng = np.random.default_rng(0)
    path = tmp_path / f"img{suffix}"
    cv2.imwrite(str(path), rng.integers(0, 256, size=(97, 131, 3), dtype=np.uint8))
    pixels = images.read_image(path, 224)
    assert pixels.dtype == np.uint8 and pixels.shape == (224, 224, 3)
    tensor = images.to_tensor(pixels)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 224, 224)
    assert torch.equal(tensor, official_style_tensor(path, 224))
    assert tensor.min() >= -1 and tensor.max() <= 1


def numpy_official(pixels_chw: np.ndarray) -> torch.Tensor:
    """The float path the loaders used before batches crossed as uint8: float32 in NumPy, /255, -0.5, /0.5."""
    x = pixels_chw.astype(np.float32)
    x /= 255
    x -= 0.5
    x /= 0.5
    return torch.from_numpy(x)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_device_normalisation_is_the_official_float32_arithmetic_bit_for_bit(tmp_path, device):
    levels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(images.normalise(levels.to(device)).cpu(), numpy_official(levels.numpy()))
    assert images.NORMALISED_LEVELS.dtype == np.float32 and images.NORMALISED_LEVELS[[0, 255]].tolist() == [-1, 1]
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), np.random.default_rng(3).integers(0, 256, size=(300, 411, 3), dtype=np.uint8))
    pixels = images.read_image(path, 224)
    batch = torch.stack([images.to_chw(pixels), images.to_chw(pixels[::-1].copy())])
    expected = torch.stack([official_style_tensor(path, 224), numpy_official(batch[1].numpy())])
    on_device = images.normalise(batch.to(device))
    assert on_device.dtype == torch.float32 and on_device.device.type == device
    assert torch.equal(on_device.cpu(), expected)
    assert torch.equal(images.normalise(batch.flip(2).to(device)).cpu(), expected.flip(2))   # strided views too
    # the table lookup the other devices run, here on the CPU: the same bits
    assert torch.equal(images._levels_on(torch.device("cpu"))[batch.long()], expected)
    assert torch.equal(images.to_tensor(pixels), expected[0])
    with pytest.raises(TypeError, match="expects uint8 images"):
        images.normalise(expected)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_cross_as_contiguous_uint8(tmp_path, workers):
    paths = []
    for k in range(5):
        paths.append(str(tmp_path / f"{k}.png"))
        cv2.imwrite(paths[-1], np.random.default_rng(k).integers(0, 256, size=(20 + k, 30, 3), dtype=np.uint8))
    ds = images.IQAImages(paths, np.linspace(0, 1, 5), image_size=32)
    batch, labels, index = next(iter(images.ImageLoader(ds, batch_size=4, num_workers=workers)))
    assert batch.dtype == torch.uint8 and batch.shape == (4, 3, 32, 32) and batch.is_contiguous()
    assert batch.numel() * batch.element_size() == 4 * 3 * 32 * 32   # a quarter of float32's bytes
    assert torch.equal(images.normalise(batch), torch.stack([images.to_tensor(images.read_image(p, 32))
                                                             for p in paths[:4]]))


class _Threads(torch.utils.data.Dataset):
    """Reports, from the worker that reads it, OpenCV's and torch's thread counts and the user's init mark."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return cv2.getNumThreads(), torch.get_num_threads(), int(os.environ.get("PROMPTIQA_TEST_INIT", -1))


def _mark_worker(worker_id):
    os.environ["PROMPTIQA_TEST_INIT"] = str(100 + worker_id)


def test_loader_workers_run_opencv_on_one_thread_and_the_users_init():
    before = cv2.getNumThreads()
    cv2.setNumThreads(4)
    try:
        # OpenCV's pool running in this process, as after decoding here: setting the thread count inside a forked
        # worker then crashes or hangs it (it tears down pool threads the worker does not have)
        cv2.resize(np.zeros((768, 1024), np.float32), (2048, 1536), interpolation=cv2.INTER_CUBIC)
        loader = images.ImageLoader(_Threads(), batch_size=1, num_workers=2, worker_init_fn=_mark_worker)
        for _ in range(2):   # fresh workers each pass
            assert sorted(tuple(int(v) for v in batch) for batch in loader) == [(1, 1, 100), (1, 1, 101)]
        assert cv2.getNumThreads() == 4 and "PROMPTIQA_TEST_INIT" not in os.environ   # this process as it was
    finally:
        cv2.setNumThreads(before)


class _DiesOfSigbus(torch.utils.data.Dataset):
    """A worker that reads item ``at`` dies of SIGBUS after ``delay`` s, as one writing a batch into a full /dev/shm."""

    def __init__(self, at=3, delay=0.0, n=16):
        self.at, self.delay, self.n = at, delay, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.at:
            time.sleep(self.delay)
            os.kill(os.getpid(), signal.SIGBUS)
        return torch.zeros(2)


def test_a_worker_killed_by_sigbus_is_one_line_about_shared_memory(capsys):
    from promptiqa.errors import run_command

    def fetch():   # the death is reported while the main process waits for a batch
        for _ in images.ImageLoader(_DiesOfSigbus(), batch_size=1, num_workers=2):
            pass

    assert run_command(fetch) == 1
    err, = capsys.readouterr().err.strip().splitlines()   # (the dying worker writes its own note to fd 2)
    assert re.fullmatch(r"error: data loading ran out of shared memory \(/dev/shm; PyTorch: DataLoader worker \(pid "
                        r"\d+\) is killed by signal: Bus error\): run the container with --shm-size=8g or --ipc=host, "
                        r"or use fewer --workers", err), err

    @images.explain_shared_memory_failures()
    def consume():   # ... or while it is busy with the last batch (the engine's loops are marked like this)
        for _ in images.ImageLoader(_DiesOfSigbus(at=2, delay=0.3), batch_size=1, num_workers=1):
            time.sleep(2)

    with pytest.raises(images.SharedMemoryError, match="Bus error"):
        consume()
    with pytest.raises(images.SharedMemoryError, match="Bus error"):
        # a batch whose worker died before handing it over first shows as a reset connection
        alive = iter(torch.utils.data.DataLoader(_DiesOfSigbus(at=0, delay=0.3), num_workers=1))
        with images.explain_shared_memory_failures(fetching=True):
            raise ConnectionResetError(104, "Connection reset by peer")
    del alive
    with pytest.raises(ConnectionResetError):   # no worker died: the error is left as it is
        with images.explain_shared_memory_failures(fetching=True):
            raise ConnectionResetError(104, "Connection reset by peer")
    with pytest.raises(RuntimeError, match="^boom$"):
        with images.explain_shared_memory_failures():
            raise RuntimeError("boom")


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _unshare_works(),
                    reason="needs a private mount namespace (unshare) for a small /dev/shm")
def test_a_full_dev_shm_is_one_line_about_shared_memory():
    # The real thing: the loader's workers write their batches into a 1 MB /dev/shm (Docker's default is 64 MB).
    program = textwrap.dedent("""
        import numpy as np
        from promptiqa.data.images import ImageLoader, IQAImages
        from promptiqa.errors import exit_with

        data = IQAImages([np.full((224, 224, 3), i, np.uint8) for i in range(32)], np.zeros(32), 224)
        exit_with(lambda: [None for _ in ImageLoader(data, batch_size=16, num_workers=2)] and None)
    """)
    shell = f"mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {shlex.quote(sys.executable)} -c {shlex.quote(program)}"
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 1, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: data loading ran out of shared memory (/dev/shm; PyTorch: ") and \
        line.endswith("): run the container with --shm-size=8g or --ipc=host, or use fewer --workers"), line


def test_read_image_names_the_file_it_cannot_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        images.read_image(tmp_path / "missing.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(OSError, match="could not decode .*broken.jpg"):
        images.read_image(broken)


def rows_and_columns_image(size=6):
    """uint8 HWC image whose red channel encodes the row and green channel the column."""
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0] = np.arange(size)[:, None] * 10
    image[..., 1] = np.arange(size)[None, :] * 10
    return image


@pytest.mark.parametrize("flip_axis", ["vertical", "horizontal", "none"])
def test_training_flips_the_chosen_images_along_the_chosen_axis(flip_axis):
    # flip_batch is the flip training applies (each image of a step with probability 0.5, from its rank's stream)
    image = images.to_tensor(rows_and_columns_image())
    batch = torch.stack([image, image.flip(0), -image])          # three different images
    out = flip_batch(batch, np.array([True, False, True]), flip_axis)
    official = {  # the official flip: np.fliplr on a CHW array, which reverses the height
        "vertical": lambda x: torch.from_numpy(np.fliplr(x.numpy()).copy()),
        "horizontal": lambda x: x.flip(2),                        # mirrored left-right
        "none": lambda x: x}[flip_axis]
    assert torch.equal(out[0], official(batch[0])) and torch.equal(out[2], official(batch[2]))
    assert torch.equal(out[1], batch[1])                         # not drawn: unchanged
    if flip_axis == "vertical":                                  # upside down: the top row is the old bottom row
        assert torch.equal(out[0, 0, 0], batch[0, 0, -1]) and torch.equal(out[0, 1], batch[0, 1].flip(0))
    if flip_axis == "horizontal":                                # the first column is the old last column
        assert torch.equal(out[0, :, :, 0], batch[0, :, :, -1])
    assert torch.equal(flip_batch(batch, np.zeros(3, bool), flip_axis), batch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_flip_mask_reaches_the_gpu_without_a_blocking_copy():
    batch = images.normalise(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)).cuda()
    flips = np.array([True, False, True, False])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")   # a copy from pageable memory would synchronise: an error here
    try:
        out = flip_batch(batch, flips, "vertical")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(out.cpu(), flip_batch(batch.cpu(), flips, "vertical"))


def test_samples_are_served_unflipped_and_draw_no_random_numbers():
    image = rows_and_columns_image()
    ds = images.IQAImages([image] * 4, np.zeros(4), image_size=6)
    state = torch.get_rng_state()
    assert all(torch.equal(ds[i][0], images.to_chw(image)) for i in range(4))
    assert torch.equal(torch.get_rng_state(), state)


def test_iqa_images_serves_a_subset_with_aligned_labels(tmp_path):
    paths = []
    for k in range(4):
        paths.append(str(tmp_path / f"{k}.png"))
        cv2.imwrite(paths[-1], np.full((5, 7, 3), 40 * k, np.uint8))
    ds = images.IQAImages(paths, [0.3, 0.1], image_size=16, indices=[3, 1])
    image, label, index = ds[0]
    assert len(ds) == 2 and index == 0 and label.item() == pytest.approx(0.3)
    assert image.dtype == torch.uint8 and torch.equal(image, images.to_chw(images.read_image(paths[3], 16)))
    with pytest.raises(ValueError, match="3 labels for 2 images"):
        images.IQAImages(paths, [0.1, 0.2, 0.3], image_size=16, indices=[3, 1])
