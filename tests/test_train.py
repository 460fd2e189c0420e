"""Training: outputs, launch modes, virtual ranks, exact resume, augmentations and refusals (CPU, micro model)."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from promptiqa.config import TrainConfig, resolve_config
from promptiqa.devices import cpu_name, cpu_vector_extensions
from promptiqa.engine import TrainingError, loop as loop_module
from promptiqa.engine.augment import PromptAugment
from promptiqa.engine.run_folder import TENSORBOARD
from promptiqa.engine.tracking import event_files
from promptiqa.engine.trainer import launch
from promptiqa.engine.virtual_ranks import plan_steps
from promptiqa.errors import ConfigError
from promptiqa.models import load_model, read_checkpoint
from tests.conftest import copy_of_run
from tests.fixtures.launchers import kill_node, start_nodes, torchrun, wait_nodes

ROOT = Path(__file__).resolve().parents[1]
# Parameters whose true gradient is zero: they shift a channel by a constant right before a BatchNorm (the conv
# biases, and the last bias of the ViT block whose output only feeds the CNN head). What they receive is rounding
# noise, which Adam scales up to lr-sized steps, so two summation orders (thread counts, batched vs accumulated
# groups) move them differently while every other weight agrees.
ZERO_GRADIENT = {"module.cnn.0.bias", "module.cnn.4.bias", "module.cnn.8.bias", "module.block.mlp.fc2.bias"}


def _weights(path):
    state = read_checkpoint(path)["state_dict"]
    return {k: v for k, v in state.items()}


def _assert_same_weights(a, b, atol=0.0, skip=()):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        if key in skip:
            continue
        torch.testing.assert_close(wa[key].float(), wb[key].float(), atol=atol, rtol=0, msg=key)


@pytest.fixture(scope="module")
def trained_run(data, train_argv, tmp_path_factory):
    """A finished run with the tiny defaults (2 epochs) and what launch returned. Read it, never write into it: the
    tests that inspect a run and the exact-resume test's uninterrupted reference share it."""
    run = tmp_path_factory.mktemp("trained") / "run"
    return run, launch(resolve_config(train_argv(data, run)))


@pytest.fixture(scope="module")
def one_epoch_run(data, train_argv, tmp_path_factory):
    """A finished 1-epoch run, made once; tests that resume it work on a copy (``one_epoch_copy``)."""
    run = tmp_path_factory.mktemp("one_epoch") / "run"
    launch(resolve_config(train_argv(data, run, epochs=1)))
    return run


@pytest.fixture
def one_epoch_copy(one_epoch_run, tmp_path):
    """This test's own copy of ``one_epoch_run``, as if it had just trained it into tmp_path/run."""
    return copy_of_run(one_epoch_run, tmp_path)


def test_single_process_run_writes_every_output(trained_run):
    run, result = trained_run
    assert not result["stopped"]
    for name in ("config.json", "splits.json", "log.txt", "metrics.csv", "environment.json", "best_model.pth.tar",
                 "last.pth.tar", "curves.png", "summary.json"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert list(rows[0]) == ["epoch", "dataset", "split", "srocc", "plcc", "krcc", "rmse", "loss", "note"]
    assert not any(r["note"] for r in rows)   # no epoch was resumed mid-way
    assert {(r["epoch"], r["dataset"], r["split"]) for r in rows} == {
        (e, d, s) for e in ("1", "2") for d in ("koniq10k", "csiq") for s in ("train", "test")}
    env = json.loads((run / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and "git_commit" in env
    # the CPU the figures depend on: its model, vector extensions, torch's kernels and threads, the torch build
    assert env["cpu"]["model"] == cpu_name() and env["cpu"]["vector_extensions"] == cpu_vector_extensions()
    assert set(env["cpu"]) == {"model", "vector_extensions", "torch_cpu_capability", "cores", "torch_threads",
                               "torch_interop_threads", "torch_build"}
    log = (run / "log.txt").read_text()
    assert "images per step 8" in log and "prompt length 7" in log and "selects on the test split" in log
    best, info = load_model(run / "best_model.pth.tar", device="cpu", with_info=True)
    assert info["prompt_num"] == 7 and set(info["config"]["splits"]) == {"koniq10k", "csiq"}
    assert info["config"]["splits"]["csiq"]["test"]  # reference names, as in splits.json
    splits = json.loads((run / "splits.json").read_text())["splits"]
    assert splits["csiq"]["test"] == info["config"]["splits"]["csiq"]["test"]
    raw = read_checkpoint(run / "best_model.pth.tar")
    assert all(k.startswith("module.") for k in raw["state_dict"])   # the official layout


def test_torchrun_two_processes_hold_identical_weights(data, train_argv, tmp_path):
    run = tmp_path / "ddp"
    tensorboard = importlib.util.find_spec("tensorboard") is not None   # an optional dependency
    proc = torchrun(train_argv(data, run, epochs=1, **({"log_to": ["tensorboard"]} if tensorboard else {})))
    assert proc.returncode == 0, proc.stderr[-3000:]
    if tensorboard:   # rank 0 alone writes events: one file, each logging step (2 and 4) and the evaluation once
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        (events,) = event_files(run / TENSORBOARD)
        points = [(v.tag, e.step) for e in EventFileLoader(str(events)).Load() for v in e.summary.value]
        assert sorted(points) == sorted(set(points)) and {s for t, s in points if t == "train/loss"} == {2, 4}
        assert {s for t, s in points if t.startswith("test/")} == {4}
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["rank_weight_digests"]) == 2 and len(set(summary["rank_weight_digests"])) == 1
    log = (run / "log.txt").read_text()
    assert "processes per node 2" in log and "group size g=4" in log
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert {r["dataset"] for r in rows if r["split"] == "test"} == {"koniq10k", "csiq"}
    # two nodes of one process each, with --batch_size counting one node (4 = one group of 4 per node): the same
    # step and groups as above, so the same weights and global step, bit for bit; only rank 0 writes. Under srun
    # the layout comes from SLURM_TASKS_PER_NODE when --ntasks-per-node (SLURM_NTASKS_PER_NODE) was not given.
    for launcher in ("torchrun", "slurm:ntasks-per-node", "slurm:tasks-per-node"):
        nodes = tmp_path / launcher.replace(":", "_")
        results = wait_nodes(start_nodes(train_argv(data, nodes, epochs=1, batch_size=4), launcher))
        assert [code for code, _, _ in results] == [0, 0], results[0][2][-3000:] + results[1][2][-3000:]
        assert "] promptiqa " not in results[1][1]                      # rank 1 logs nothing
        log = (nodes / "log.txt").read_text()
        assert log.count("] promptiqa ") == 1 and "processes per node 1 x nodes 2" in log
        assert "group size g=4 (prompt length 3), images per step 8" in log
        _assert_same_weights(run / "last.pth.tar", nodes / "last.pth.tar")
        assert read_checkpoint(nodes / "last.pth.tar")["global_step"] == read_checkpoint(run / "last.pth.tar")[
            "global_step"] == 4
        assert (nodes / "metrics.csv").read_bytes() == (run / "metrics.csv").read_bytes()


def test_killing_one_node_ends_the_job_and_leaves_a_resumable_checkpoint(data, train_argv, tmp_path):
    run = tmp_path / "run"
    args = train_argv(data, run, epochs=50, batch_size=4, log_every=1)
    procs = start_nodes(args, "torchrun")
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not (run / "last.pth.tar").exists():   # epoch 1 saved
            time.sleep(0.2)
        assert (run / "last.pth.tar").exists(), "no checkpoint within 180 s"
        kill_node(procs[1])
        started = time.time()
        (code, _, err), _ = wait_nodes(procs, timeout=90)
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill_node(proc)
    assert code != 0 and time.time() - started < 90                     # ended, no hang
    assert re.search(r"error: rank 0 lost another process of the job \(Connection (closed|reset) by peer.*\); every "
                     r"rank stops\. Relaunch every node with --resume .*last\.pth\.tar", err), err[-3000:]
    state = read_checkpoint(run / "last.pth.tar")
    epoch = state["epoch"]
    assert 1 <= epoch < 50 and state["global_step"] == 4 * epoch and state["step"] == 0
    resume = train_argv(data, run, epochs=epoch + 1, batch_size=4, resume=run / "last.pth.tar")
    results = wait_nodes(start_nodes(resume, "torchrun"))
    assert [code for code, _, _ in results] == [0, 0], results[0][2][-3000:]
    assert read_checkpoint(run / "last.pth.tar")["global_step"] == 4 * (epoch + 1)


def test_multiprocessing_distributed_on_cpu(data, train_argv, tmp_path):
    run = tmp_path / "mp"
    # no --dist-url: the spawned group meets on a port that is free now (no fixed port to collide with another job)
    cmd = [sys.executable, str(ROOT / "train.py"), *train_argv(data, run, epochs=1), "--multiprocessing-distributed",
           "--nprocs", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert len(set(summary["rank_weight_digests"])) == 1 and len(summary["rank_weight_digests"]) == 2


def test_groups_per_process_equal_processes(data, train_argv, tmp_path):
    one = tmp_path / "k2"
    launch(resolve_config(train_argv(data, one, epochs=1, groups_per_process=2)))
    two = tmp_path / "p2"
    proc = torchrun(train_argv(data, two, epochs=1))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # same groups, same per-rank dropout/flip streams, gradients averaged, BatchNorm buffers from rank 0
    _assert_same_weights(one / "last.pth.tar", two / "last.pth.tar", atol=2e-5, skip=ZERO_GRADIENT)


def test_batched_groups_match_accumulated_groups(data, train_argv, tmp_path):
    # dropout off: the batched mode draws dropout masks from one stream instead of one per virtual rank.
    # The two modes sum in different orders, and Adam turns the rounding noise of an element whose gradient is near
    # zero into a step of up to lr; which elements those are depends on the groups drawn (measured: 1.4e-5 with
    # these groups, 2.7e-5 at seed 2027, 9e-5 with the official first epoch's), so the groups are pinned here.
    a, b = tmp_path / "acc", tmp_path / "batched"
    launch(resolve_config(train_argv(data, a, epochs=1, groups_per_process=2, drop=0.0, first_epoch="shuffled")))
    launch(resolve_config(train_argv(data, b, epochs=1, groups_per_process=2, drop=0.0, batch_groups="true",
                                first_epoch="shuffled")))
    _assert_same_weights(a / "last.pth.tar", b / "last.pth.tar", atol=2e-5, skip=ZERO_GRADIENT)


def test_interrupted_and_resumed_run_equals_uninterrupted(data, train_argv, trained_run, tmp_path):
    # Epoch 1 is the official first epoch (consecutive runs of each dataset's sample order), epoch 2 regrouped at
    # random: the resumed run crosses that boundary.
    full = trained_run[0]
    assert "first epoch: official (groups are consecutive runs" in (full / "log.txt").read_text()
    part = tmp_path / "part"
    stopped = launch(resolve_config(train_argv(data, part, stop_after_steps=3)))   # mid-epoch 1 (4 steps an epoch)
    assert stopped["stopped"] and stopped["step"] == 3
    state = read_checkpoint(part / "last.pth.tar")
    assert state["epoch"] == 0 and state["step"] == 3
    stopped = launch(resolve_config(train_argv(data, part, resume=part / "last.pth.tar", stop_after_steps=3)))
    assert stopped["stopped"] and (stopped["epoch"], stopped["step"]) == (1, 2)   # crosses the epoch boundary
    done = launch(resolve_config(train_argv(data, part, resume=part / "last.pth.tar")))
    assert not done["stopped"]
    _assert_same_weights(full / "last.pth.tar", part / "last.pth.tar")
    optim_full, optim_part = read_checkpoint(full / "last.pth.tar"), read_checkpoint(part / "last.pth.tar")
    assert optim_full["global_step"] == optim_part["global_step"] == 8
    # metrics.csv: each epoch once; test figures as uninterrupted; the resumed epochs' training figures say what
    # they cover (epoch 1 resumed at step 3 of 4, epoch 2 at step 2 of 4; a dataset without a step there has none)
    rows_full, rows_part = (list(csv.DictReader(open(run / "metrics.csv"))) for run in (full, part))
    key = lambda r: (r["epoch"], r["dataset"], r["split"])  # noqa: E731
    assert len(set(map(key, rows_part))) == len(rows_part) and set(map(key, rows_part)) <= set(map(key, rows_full))
    assert [r for r in rows_part if r["split"] == "test"] == [r for r in rows_full if r["split"] == "test"]
    assert {r["epoch"] for r in rows_part if r["split"] == "train"} == {"1", "2"}
    notes = {r["epoch"]: r["note"] for r in rows_part if r["split"] == "train"}
    assert notes == {"1": "resumed mid-epoch at step 3 of 4: the training loss and figures cover steps 4-4 only",
                     "2": "resumed mid-epoch at step 2 of 4: the training loss and figures cover steps 3-4 only"}
    assert f"({notes['2']})" in (part / "log.txt").read_text()


def test_resume_with_more_epochs_extends_a_finished_run(data, train_argv, one_epoch_copy):
    run = one_epoch_copy
    launch(resolve_config(train_argv(data, run, epochs=2, resume=run / "last.pth.tar")))
    state = read_checkpoint(run / "last.pth.tar")
    assert state["epoch"] == 2 and state["global_step"] == 8
    log = (run / "log.txt").read_text()
    assert "resumed from" in log and "lr 5e-05" in log   # cosine recomputed for 2 epochs: epoch 2 at lr/2


def test_resume_refusals(data, train_argv, one_epoch_run, tmp_path):
    new = tmp_path / "new"
    with pytest.raises(TrainingError, match="file not found"):
        launch(resolve_config(train_argv(data, new, resume=tmp_path / "missing.pth.tar")))
    (tmp_path / "corrupt.pth.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="not a readable checkpoint"):
        launch(resolve_config(train_argv(data, new, resume=tmp_path / "corrupt.pth.tar")))
    run = copy_of_run(one_epoch_run, tmp_path)   # a finished 1-epoch run
    with pytest.raises(TrainingError, match="not a resumable training checkpoint"):
        launch(resolve_config(train_argv(data, run, resume=run / "best_model.pth.tar")))
    with pytest.raises(TrainingError, match="architecture changed.*image_size: 64 -> 96"):
        launch(resolve_config(train_argv(data, run, image_size=96, resume=run / "last.pth.tar")))
    with pytest.warns(UserWarning, match="changed settings: lr: 0.0001 -> 0.001, first_epoch: official -> shuffled"):
        launch(resolve_config(train_argv(data, run, lr=1e-3, epochs=2, first_epoch="shuffled",
                                    resume=run / "last.pth.tar")))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data, train_argv, one_epoch_copy, monkeypatch):
    run = one_epoch_copy
    good = (run / "last.pth.tar").read_bytes()
    real = loop_module.F.l1_loss
    calls = {"n": 0}

    def poisoned(pred, target):
        calls["n"] += 1
        loss = real(pred, target)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(loop_module.F, "l1_loss", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite training loss nan at epoch 2, step 3 \(dataset (koniq10k|csiq)\)"):
        launch(resolve_config(train_argv(data, run, epochs=2, resume=run / "last.pth.tar")))
    assert (run / "last.pth.tar").read_bytes() == good


def test_sigterm_leaves_a_resumable_checkpoint(data, train_argv, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), *train_argv(data, run, epochs=50, log_every=1)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600   # a busy machine: epoch 1 can take minutes
    while time.time() < deadline and not (run / "last.pth.tar").exists():  # wait for epoch 1 to finish
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    state = read_checkpoint(run / "last.pth.tar")
    assert 1 <= state["epoch"] < 50
    assert "stopped at epoch" in (run / "log.txt").read_text()


@pytest.fixture(scope="module")
def val_run(data, train_argv, tmp_path_factory):
    """A finished 2-epoch run with --val_fraction 0.25 and --log tensorboard (read it, never write into it)."""
    run = tmp_path_factory.mktemp("val") / "run"
    return run, launch(resolve_config(train_argv(data, run, val_fraction=0.25, log_to=["tensorboard"])))


def test_val_fraction_selects_an_epoch_on_validation_and_reports_its_test_figures(data, val_run):
    from promptiqa.data import load_dataset, make_split
    from promptiqa.engine.run_folder import best_epoch, selection_score

    run, result = val_run
    splits = json.loads((run / "splits.json").read_text())["splits"]
    for key, root in data.items():   # validation and train parts: disjoint units that make up the seed's train side
        entry, seed_split = splits[key], make_split(load_dataset(key, root), 2024)
        assert entry["val"] and not set(entry["val"]) & set(entry["train"])
        assert entry["train"] + entry["val"] == seed_split.train_units and entry["test"] == seed_split.test_units
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    figures = {(int(r["epoch"]), r["dataset"], r["split"]): {m: float(r[m]) for m in ("srocc", "plcc", "krcc", "rmse")}
               for r in rows}
    assert {k for k in figures if k[2] == "val"} == {(e, d, "val") for e in (1, 2) for d in data}
    chosen = best_epoch({e: selection_score({d: figures[e, d, "val"] for d in data}) for e in (1, 2)})
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val"]["epoch"] == result["best_val"]["epoch"] == chosen
    assert summary["best"]["epoch"] != chosen      # here the two rules disagree: the test below relies on it
    assert summary["best_val"]["val"] == {d: figures[chosen, d, "val"] for d in data}
    assert summary["best_val"]["test"] == {d: figures[chosen, d, "test"] for d in data}
    saved = read_checkpoint(run / "best_val_model.pth.tar")
    assert saved["epoch"] == chosen and saved["metrics"] == summary["best_val"]["test"]
    assert saved["config"]["splits"]["csiq"]["val"] == splits["csiq"]["val"]
    assert read_checkpoint(run / "best_model.pth.tar")["epoch"] == summary["best"]["epoch"]
    log = (run / "log.txt").read_text()
    assert "validation / " in log and "best_val_model.pth.tar is chosen by the same rule" in log
    assert re.search(rf"test figures by selection: last epoch 2: .* \| best on test \(epoch {summary['best']['epoch']}, "
                     rf"best_model.pth.tar\): .* \| best on validation \(epoch {chosen}, best_val_model.pth.tar\): "
                     rf"koniq10k SROCC {figures[chosen, 'koniq10k', 'test']['srocc']:.4f}", log)
    # TensorBoard gets the validation figures beside the test figures, at the same steps
    from tests.helpers import tensorboard_scalars

    events = tensorboard_scalars(run)
    for d in data:
        val_points = events[f"val/{d}/srocc"]
        assert [s for s, _ in val_points] == [s for s, _ in events[f"test/{d}/srocc"]]
        assert [v for _, v in val_points] == pytest.approx([figures[e, d, "val"]["srocc"] for e in (1, 2)])


def test_resumed_validation_run_keeps_its_selection(data, train_argv, val_run, tmp_path):
    full = val_run[0]
    part = tmp_path / "part"
    stopped = launch(resolve_config(train_argv(data, part, val_fraction=0.25, stop_after_steps=3)))   # mid-epoch 2
    assert stopped["stopped"] and (stopped["epoch"], stopped["step"]) == (1, 1)
    assert read_checkpoint(part / "last.pth.tar")["best_val"]["epoch"] == 1
    with pytest.raises(TrainingError, match=r"the koniq10k split of --seed 2024 is not the one the run trained on "
                                            r"\(seed 2024, validation part of 5 units\).*--val_fraction"):
        launch(resolve_config(train_argv(data, part, resume=part / "last.pth.tar")))
    launch(resolve_config(train_argv(data, part, val_fraction=0.25, resume=part / "last.pth.tar")))
    # epoch 1 stays the best on validation (the best on test is epoch 2): the state came back from last.pth.tar
    assert json.loads((part / "summary.json").read_text())["best_val"] == \
        json.loads((full / "summary.json").read_text())["best_val"]
    _assert_same_weights(full / "best_val_model.pth.tar", part / "best_val_model.pth.tar")
    _assert_same_weights(full / "last.pth.tar", part / "last.pth.tar")
    # --split_file with the run's splits.json reproduces the validation part without --val_fraction
    cfg = resolve_config(train_argv(data, tmp_path / "again", split_file=full / "splits.json"))
    from promptiqa.data import load_dataset, resolve_split
    split = resolve_split(load_dataset("csiq", data["csiq"]), split_file=cfg.split_file)
    assert split.val_units == json.loads((full / "splits.json").read_text())["splits"]["csiq"]["val"]


def test_val_fraction_zero_leaves_the_run_unchanged(data, train_argv, one_epoch_run, tmp_path):
    run = tmp_path / "zero"
    launch(resolve_config(train_argv(data, run, epochs=1, val_fraction=0)))
    for name in ("splits.json", "metrics.csv"):
        assert (run / name).read_bytes() == (one_epoch_run / name).read_bytes(), name
    _assert_same_weights(one_epoch_run / "last.pth.tar", run / "last.pth.tar")
    assert not (run / "best_val_model.pth.tar").exists() and "best_val" not in read_checkpoint(run / "last.pth.tar")
    assert "best_val" not in json.loads((run / "summary.json").read_text())


def test_bad_val_fraction_is_refused_in_one_line(data, train_argv, tmp_path):
    with pytest.raises(ConfigError, match="^--val_fraction must be at least 0 and below 1, got 1.5$"):
        resolve_config(train_argv(data, tmp_path / "run", val_fraction=1.5))
    # csiq's train side holds 4 references: 0.1 x 4 rounds to no validation reference
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *train_argv(data, tmp_path / "run",
                                                                          val_fraction=0.1)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: --val_fraction 0.1 leaves 4 training and 0 validation units of the 4 training units of csiq (split by "
        "reference); each side needs at least one, so 4 x F must round to between 1 and 3"]
    assert not (tmp_path / "run").exists()   # refused before anything was written


def test_prompt_augmentations():
    labels = torch.tensor([0.2, 0.5, 0.8])
    scaled, scale = PromptAugment.apply(labels, t=0.5, flip=False)
    assert scale.item() == pytest.approx(0.9) and scaled.tolist() == pytest.approx([0.2 / 0.9, 0.5 / 0.9, 0.8 / 0.9])
    flipped, scale = PromptAugment.apply(labels, t=None, flip=True)
    assert scale.item() == 1 and flipped.tolist() == pytest.approx([0.8, 0.5, 0.2])
    both, scale = PromptAugment.apply(labels, t=0.0, flip=True)      # u at the group's max: max label -> 1 -> 0
    assert both.tolist() == pytest.approx([1 - 0.25, 1 - 0.625, 0.0])
    torch.testing.assert_close(PromptAugment.invert(both, scale, True), labels)
    assert (both >= 0).all() and (both <= 1).all()
    # every rank draws the same decisions from the shared stream; the rates are respected
    a, b = PromptAugment(7, 0.5, 0.1), PromptAugment(7, 0.5, 0.1)
    draws = [a.draw() for _ in range(2000)]
    assert draws == [b.draw() for _ in range(2000)]
    assert 0.45 < sum(t is not None for t, _ in draws) / 2000 < 0.55
    assert 0.07 < sum(f for _, f in draws) / 2000 < 0.13
    never = PromptAugment(7, 0.0, 0.0)
    assert all(d == (None, False) for d in (never.draw() for _ in range(100)))


def test_flipping_warmup_ramps_the_rate_without_changing_the_stream():
    ramped, plain = PromptAugment(7, 0.5, 0.5, flip_warmup=4), PromptAugment(7, 0.5, 0.5)
    rates = []
    for epoch in range(6):
        ramped.set_epoch(epoch)
        rates.append(ramped.flip_rate)
    assert rates == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5, 0.5])
    ramped.set_epoch(0)
    first = [ramped.draw() for _ in range(500)]
    assert not any(f for _, f in first)                        # no flips in the first epoch
    assert [t for t, _ in first] == [t for t, _ in (plain.draw() for _ in range(500))]   # same scaling draws
    assert ramped.rng.getstate() == plain.rng.getstate()       # the same stream position: resume is unaffected


def test_batch_semantics_refusals():
    plan = plan_steps(66, procs_per_node=2, groups_per_process=3)
    assert plan.group_size == 11 and plan.isp_num == 10
    assert "images per step 132" in plan_steps(66, 6, 1, nodes=2).describe(66)
    with pytest.raises(TrainingError, match="66 does not divide into 4 process.*use a multiple of 4"):
        plan_steps(66, procs_per_node=4, groups_per_process=1)
    with pytest.raises(TrainingError, match=r"g = 8 / \(2 x 2\) = 2 is below 3"):
        plan_steps(8, procs_per_node=2, groups_per_process=2)


def test_unknown_dataset_key_lists_the_valid_ones(data, train_argv, tmp_path):
    with pytest.raises(ValueError, match="koniq10k"):
        launch(resolve_config(train_argv(data, tmp_path / "run", dataset=["koniq"])))


def test_train_py_reports_refusals_in_one_line(data, train_argv, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *train_argv(data, tmp_path / "run", batch_size=10,
                                                                          groups_per_process=4)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 1   # a refused request (the exit-code rule); 2 is argparse's usage errors
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[-1]]   # one line, no traceback
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --batch_size 10 does not divide")
    assert not (tmp_path / "run").exists()   # refused before anything was written


def test_config_file_and_command_line_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: [live, csiq]\nbatch_size: 66\ngroups_per_process: 6\nlr: 0.001\n")
    cfg = resolve_config(["--config", str(path), "--lr", "1e-5"])
    assert cfg.dataset == ["live", "csiq"] and cfg.batch_size == 66 and cfg.groups_per_process == 6
    assert cfg.lr == 1e-5 and cfg.weight_decay == TrainConfig().weight_decay
    path.write_text("datasets: [live]\n")
    with pytest.raises(ValueError, match="unknown settings \\['datasets'\\]"):
        resolve_config(["--config", str(path)])


def test_paper_configs_state_their_numerics_and_share_the_run():
    from promptiqa.config import build_parser, load_yaml

    paper, fast = (load_yaml(ROOT / "configs" / name) for name in ("paper.yaml", "paper_fast.yaml"))
    assert (paper["amp"], paper["tf32"]) == ("none", False)          # written out, not left to the defaults
    assert (fast["amp"], fast["tf32"], fast["compile"]) == ("bf16", True, False)
    shared = ("dataset", "batch_size", "epochs", "lr", "weight_decay", "random_scale_rate", "random_flipping_rate")
    assert [paper[k] for k in shared] == [fast[k] for k in shared]
    assert len(paper["dataset"]) == 12 and paper["batch_size"] == 66
    assert "--tf32 [TF32] TF32 matrix multiplies and cuDNN convolutions on CUDA (default true" in \
           " ".join(build_parser().format_help().split())
    with pytest.raises(SystemExit):
        resolve_config(["--first_epoch", "sorted"])


def test_train_sh_splits_the_paper_step_over_the_gpus_present(tmp_path):
    def dry_run(gpus):
        proc = subprocess.run(["sh", str(ROOT / "train.sh")], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, GPUS=gpus, PYTHON="echo", SAVE_PATH=str(tmp_path)))
        assert proc.returncode == 0, proc.stderr
        return proc.stdout, proc.stderr

    out, _ = dry_run("0,1,2")
    assert "--batch_size 66 --groups_per_process 2" in out and "--multiprocessing-distributed" in out
    assert "--config configs/paper.yaml" in out
    proc = subprocess.run(["sh", str(ROOT / "train.sh")], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, GPUS="0", PYTHON="echo", SAVE_PATH=str(tmp_path),
                                   CONFIG="configs/paper_fast.yaml"))
    assert "--config configs/paper_fast.yaml" in proc.stdout
    out, err = dry_run("0,1,2,3")
    assert "--batch_size 44 --groups_per_process 1" in out and "falling back to one group of 11" in err


def test_benchmark_script_prints_a_table():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--preset", "micro", "--groups", "2",
                           "--group_size", "3", "--amp", "none", "--steps", "1", "--warmup", "1",
                           "--infer_batch", "4", "--infer_batches", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("device: CPU") and lines[-2].startswith("| train") and lines[-1].startswith("| inference")


def test_bf16_autocast_and_the_official_test_prompt_mode(data, train_argv, tmp_path):
    run = tmp_path / "run"
    result = launch(resolve_config(train_argv(data, run, epochs=1, amp="bf16", test_prompt="official",
                                         groups_per_process=2, batch_groups="true")))
    assert not result["stopped"]
    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r["split"] == "test"]
    assert len(rows) == 2 and all(float(r["rmse"]) < 1 for r in rows)


@pytest.mark.filterwarnings("ignore:correlation undefined")   # bf16 rounds the micro model's close scores to one
def test_bf16_training_evaluates_and_so_chooses_the_best_model_in_float32_unless_eval_amp(data, train_argv, tmp_path,
                                                                                         monkeypatch, capsys):
    from promptiqa.models import PromptIQA

    precisions = {"forward": set(), "score": set()}     # the autocast dtype each training / evaluation call ran in

    def spy(name):
        method = getattr(PromptIQA, name)

        def wrapped(self, *args, **kwargs):
            precisions[name].add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            return method(self, *args, **kwargs)
        return wrapped

    for name in precisions:
        monkeypatch.setattr(PromptIQA, name, spy(name))
    for eval_amp, evaluated in ((None, None), ("bf16", torch.bfloat16)):
        run = tmp_path / f"eval_{eval_amp}"
        extra = {} if eval_amp is None else {"eval_amp": eval_amp}
        for seen in precisions.values():
            seen.clear()
        launch(resolve_config(train_argv(data, run, keys=["koniq10k"], epochs=1, amp="bf16", **extra)))
        assert precisions == {"forward": {torch.bfloat16}, "score": {evaluated}}
        logged = "per-epoch evaluation, and so the choice of best_model.pth.tar, runs in float32 (--eval_amp none); " \
                 "training in bf16 autocast (--amp bf16)"
        assert (logged in (run / "log.txt").read_text()) == (eval_amp is None)
        assert (run / "best_model.pth.tar").is_file()
    with pytest.raises(SystemExit):
        resolve_config(["--eval_amp", "fp16"])
    assert "argument --eval_amp: fp16 is not offered" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text("eval_amp: fp16\n")
    with pytest.raises(ConfigError, match=f"{config}: eval_amp: fp16 is not offered"):
        resolve_config(["--config", str(config)])


def test_clip_grad_bounds_the_gradient_the_optimiser_sees(data, train_argv, tmp_path):
    def first_moment_norm(run):
        launch(resolve_config(train_argv(data, run, epochs=1, stop_after_steps=1, weight_decay=0.0, **extra)))
        state = read_checkpoint(run / "last.pth.tar")["optimizer"]["state"]
        # Adam's first moment after one step is (1 - beta1) * the gradient it was given
        return torch.sqrt(sum((s["exp_avg"].double() ** 2).sum() for s in state.values())).item() / 0.1

    extra = {}
    free = first_moment_norm(tmp_path / "free")
    extra = {"clip_grad": 1e-3}
    clipped = first_moment_norm(tmp_path / "clipped")
    assert free > 1e-2 and clipped == pytest.approx(1e-3, rel=1e-3)


def test_lr_warmup_ramps_the_first_steps_then_follows_the_cosine(data, train_argv, tmp_path):
    from promptiqa.engine.schedule import learning_rate

    cfg = resolve_config(train_argv(data, tmp_path / "w", lr=1e-3, epochs=4, lr_warmup_steps=10))

    def lr(epoch, step=None):
        return learning_rate(cfg.lr, cfg.epochs, epoch, step, cfg.lr_warmup_steps)

    assert [lr(0, s) for s in (0, 4, 9, 10, 500)] == pytest.approx([1e-4, 5e-4, 1e-3, 1e-3, 1e-3])
    assert lr(2, 3) == pytest.approx(0.5e-3 * 0.4)       # the cosine (half at epoch 2 of 4) x the ramp
    assert lr(2) == pytest.approx(0.5e-3)


def test_training_in_process_gives_back_the_signal_handlers_and_warning_filters(data, train_argv, tmp_path):
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    term, filters = signal.getsignal(signal.SIGTERM), list(warnings.filters)
    try:
        launch(resolve_config(train_argv(data, tmp_path / "run", epochs=1, stop_after_steps=1)))
        assert signal.getsignal(signal.SIGTERM) == term
        os.kill(os.getpid(), signal.SIGINT)   # the first Ctrl-C after training reaches the caller's handler
        deadline = time.time() + 5
        while not caught and time.time() < deadline:
            time.sleep(0.01)
        assert caught == [signal.SIGINT]
        assert warnings.filters == filters
    finally:
        signal.signal(signal.SIGINT, previous)


def test_launch_leaves_the_callers_config_unchanged(data, train_argv, tmp_path):
    # --multiprocessing-distributed fills in the process count and a rendezvous address for the spawned ranks
    cfg = resolve_config(train_argv(data, tmp_path / "run", epochs=1, stop_after_steps=1) + ["--multiprocessing-distributed"])
    before = cfg.to_dict()
    assert launch(cfg) is None
    assert cfg.to_dict() == before and cfg.nprocs is None and cfg.dist_url == "env://"
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    # what the spawned rank ran with: a port that was free at launch
    assert saved["nprocs"] == 1 and re.fullmatch(r"tcp://127\.0\.0\.1:\d+", saved["dist_url"])
