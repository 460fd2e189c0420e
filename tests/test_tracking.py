"""--log_to tensorboard: the event files a tiny run writes, read back as TensorBoard reads them; a resumed run shows
each step once, also when the interrupted run wrote events after its last checkpoint; only rank 0 writes; a missing
package is one line before any work (CPU, micro model)."""
from __future__ import annotations

import shutil
import sys
from collections import Counter

import pytest

from promptiqa.config import resolve_config
from promptiqa.engine import run_folder
from promptiqa.engine.trainer import launch
from promptiqa.engine.tracking import Tracker, cut_events_after, event_files
from promptiqa.errors import ConfigError
from tests.conftest import copy_of_run
from tests.helpers import tensorboard_scalars

pytest.importorskip("tensorboard", reason="--log_to tensorboard needs the tensorboard package")
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader, RawEventFileLoader  # noqa: E402

TRAIN_TAGS = {"train/loss", "train/lr", "train/images_per_s"}
TEST_TAGS = {"test/koniq10k/srocc", "test/koniq10k/plcc", "test/srocc_mean", "test/plcc_mean"}


def _options(**extra):
    # one dataset of 19 train images, 8 per step: 2 steps an epoch; logging steps 2 and 4, evaluations at 2 and 4
    return dict(keys=["koniq10k"], log_to=["tensorboard"], **extra)


def _raw_points(run):
    """Every (tag, step) the event files hold, counted over all files, with no reader's purging."""
    seen = Counter()
    for path in event_files(run / run_folder.TENSORBOARD):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                seen[value.tag, event.step] += 1
    return seen


@pytest.fixture(scope="module")
def resumed(data, train_argv, tmp_path_factory):
    """A 2-epoch run stopped after step 1 (mid-epoch, not a logging step) and resumed to its end: (the run, a copy
    of its checkpoint at step 1, what TensorBoard reads from it). Tests that resume it again work on a copy."""
    run = tmp_path_factory.mktemp("tb") / "run"
    launch(resolve_config(train_argv(data, run, **_options(stop_after_steps=1))))
    at_step_1 = run.parent / "last_at_step_1.pth.tar"
    shutil.copy(run / run_folder.LAST, at_step_1)
    launch(resolve_config(train_argv(data, run, **_options(resume=run / run_folder.LAST))))
    return run, at_step_1, tensorboard_scalars(run)


def test_a_run_writes_loss_lr_speed_and_every_evaluation(resumed):
    run, _, points = resumed
    assert set(points) == TRAIN_TAGS | TEST_TAGS
    # what an uninterrupted run logs: every 2nd step (log_every) and an evaluation per epoch; not the stop at step 1
    assert all([s for s, _ in points[tag]] == [2, 4] for tag in points)
    assert [v for _, v in points["train/lr"]] == pytest.approx([1e-4, 5e-5])   # the cosine: epoch 2 at lr / 2
    assert all(v > 0 for _, v in points["train/images_per_s"] + points["train/loss"])
    rows = [r for r in run_folder.read_metrics(run / run_folder.METRICS) if r["split"] == "test"]
    for metric in ("srocc", "plcc"):
        assert [v for _, v in points[f"test/koniq10k/{metric}"]] == pytest.approx([r[metric] for r in rows])
        assert points[f"test/{metric}_mean"] == points[f"test/koniq10k/{metric}"]   # the mean of one dataset
    log = (run / run_folder.LOG).read_text()
    assert log.count("TensorBoard event files in") == 2   # the run and its resume
    assert len(event_files(run / run_folder.TENSORBOARD)) == 2 and set(_raw_points(run).values()) == {1}


def test_a_resumed_run_shows_every_step_once_even_after_events_written_past_its_checkpoint(resumed, data,
                                                                                          train_argv, tmp_path):
    run = copy_of_run(resumed[0], tmp_path)
    # as if the resumed run had been killed after writing all its events but before any checkpoint after step 1
    shutil.copy(resumed[1], run / run_folder.LAST)
    launch(resolve_config(train_argv(data, run, **_options(resume=run / run_folder.LAST))))
    assert "TensorBoard: removed 14 point(s) of steps after 1" in (run / run_folder.LOG).read_text()
    points, before = tensorboard_scalars(run), resumed[2]
    assert set(_raw_points(run).values()) == {1}   # the files themselves hold each step once, for any reader
    # the same steps and, resume being exact, the same figures (but the speed)
    steps = (lambda read: {tag: [s for s, _ in p] for tag, p in read.items()})   # noqa: E731
    assert steps(points) == steps(before)
    assert {tag: p for tag, p in points.items() if tag != "train/images_per_s"} == \
           {tag: p for tag, p in before.items() if tag != "train/images_per_s"}


def test_only_rank_0_writes_and_a_disabled_tracker_does_nothing(tmp_path):
    for backends, is_main in ((["tensorboard"], False), ([], True), (["none"], True)):
        tracker = Tracker(backends, tmp_path, is_main=is_main)
        tracker.training_step(1, [], 1e-4, 8)
        tracker.evaluation(1, {"live": {"srocc": 0.5, "plcc": 0.5}})
        tracker.close()
        assert not tracker.active and list(tmp_path.iterdir()) == []


def test_a_cut_rewrites_files_with_a_record_cut_short_and_overwrite_clears_the_folder(tmp_path):
    tracker = Tracker(["tensorboard"], tmp_path, is_main=True)
    for step in (1, 2, 3):
        tracker.evaluation(step, {"live": {"srocc": step / 10, "plcc": step / 10}})
    tracker.close()
    (path,) = event_files(tmp_path / run_folder.TENSORBOARD)
    with open(path, "ab") as fh:
        fh.write(b"\x05\x00\x00")   # a kill in the middle of a record
    assert cut_events_after(tmp_path / run_folder.TENSORBOARD, 2) == 4   # step 3's four scalars
    assert [s for s, _ in tensorboard_scalars(tmp_path)["test/live/srocc"]] == [1, 2]
    assert path.stat().st_size == sum(len(r) + 16 for r in RawEventFileLoader(str(path)).Load())   # no partial record
    assert run_folder.existing_run_files(tmp_path) == [run_folder.TENSORBOARD]
    assert run_folder.clear_run(tmp_path) == [run_folder.TENSORBOARD] and list(tmp_path.iterdir()) == []


def test_a_missing_tensorboard_is_one_line_before_any_work(data, train_argv, tmp_path, monkeypatch, capsys):
    from promptiqa.cli import main

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)   # what an environment without it raises
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"--log_to tensorboard needs the tensorboard package .*; pip install "
                                          r"tensorboard \(or pip install \"\.\[tensorboard\]\"\)"):
        launch(resolve_config(train_argv(data, run, **_options())))
    assert main(["train", *train_argv(data, run, **_options())]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --log_to tensorboard needs the tensorboard package")
    assert not run.exists()
    with pytest.raises(SystemExit):
        resolve_config(["--log_to", "wandb"])
    # --log is the short name (torchrun refuses it, so --log_to is the one that works everywhere)
    assert resolve_config(["--log", "tensorboard"]).log_to == ["tensorboard"]
