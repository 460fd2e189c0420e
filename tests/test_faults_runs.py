"""Faults and bad input around runs (issue 19): train.py, test.py, the ISP tools and summarise.py keep the user's
files, refuse before any work with one line, and keep metrics and checkpoints consistent across interruptions."""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from promptiqa.config import resolve_config
from promptiqa.data import load_dataset, make_split, save_splits
from promptiqa.engine import trainer as trainer_module
from promptiqa.engine.run_folder import read_metrics
from promptiqa.engine.trainer import launch
from promptiqa.errors import ConfigError, run_command
from promptiqa.evaluation import runner
from promptiqa.experiments import summary
from promptiqa.evaluation.isp import isp_main
from promptiqa.models import read_checkpoint
from tests.conftest import ROOT, copy_of_run

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes (temporary files included)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _train(argv, capsys):
    """train.py in this process: (exit code, stderr lines)."""
    capsys.readouterr()
    code = run_command(lambda: trainer_module.main(argv))
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def stopped(data, train_argv, tmp_path_factory):
    """A run stopped (resumably) after its first step: last.pth.tar, config.json, splits.json, log.txt, ..."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    assert launch(resolve_config(train_argv(data, run, stop_after_steps=1)))["stopped"]
    return run


@pytest.fixture
def run_copy(stopped, tmp_path):
    return copy_of_run(stopped, tmp_path)


# ---------------------------------------------------------------- item 2: a folder holding a run


def test_train_refuses_a_folder_that_holds_a_run_and_overwrite_replaces_it(data, train_argv, run_copy, tmp_path,
                                                                           capsys):
    run, before = run_copy, _snapshot(run_copy)
    code, err = _train(train_argv(data, run, stop_after_steps=1), capsys)
    assert code == 1 and err == [
        f"error: --save_path {run} already holds a run (config.json, splits.json, environment.json, log.txt, ...); "
        f"continue it with --resume {run / 'last.pth.tar'}, give another --save_path, or pass --overwrite to "
        f"replace it"]
    assert _snapshot(run) == before
    other = tmp_path / "other"   # resuming another run's checkpoint into this folder would overwrite it too
    shutil.copytree(run, other)
    code, err = _train(train_argv(data, run, resume=other / "last.pth.tar", stop_after_steps=1), capsys)
    assert code == 1 and "already holds a run" in err[0] and _snapshot(run) == before
    code, _ = _train(train_argv(data, run, stop_after_steps=1, overwrite=True), capsys)
    assert code == 0
    log = (run / "log.txt").read_text()
    assert log.count("] promptiqa ") == 1 and "--overwrite: removed the previous run's config.json" in log


# ---------------------------------------------------------------- item 3: a refused resume writes nothing


def test_a_refused_resume_writes_nothing(data, train_argv, run_copy, tmp_path, capsys):
    run, last = run_copy, run_copy / "last.pth.tar"
    before = _snapshot(run)
    other = tmp_path / "seed7.json"
    save_splits(other, {k: make_split(load_dataset(k, data[k]), 7) for k in ("koniq10k", "csiq")})
    refusals = [
        (dict(seed=7), r"the (koniq10k|csiq) split of --seed 7 is not the one the run trained on \(seed 2024\)"),
        (dict(split_file=other), r"split of --split_file .*seed7.json is not the one the run trained on"),
        (dict(dataset=["koniq10k"]), r"the run trained on csiq, koniq10k, not koniq10k"),
        (dict(image_size=96), r"the architecture changed \(image_size: 64 -> 96\)"),
    ]
    for extra, message in refusals:
        code, err = _train(train_argv(data, run, resume=last, stop_after_steps=1, **extra), capsys)
        assert code == 1 and len(err) == 1 and re.search(message, err[0]), (extra, err)
        assert _snapshot(run) == before, extra   # config.json, splits.json, log.txt, the checkpoint: untouched


# ---------------------------------------------------------------- item 4: metrics.csv follows the checkpoint


def test_metrics_rows_follow_the_checkpoint_across_interruptions(data, train_argv, tmp_path):
    run = tmp_path / "run"
    resume = dict(resume=run / "last.pth.tar")
    launch(resolve_config(train_argv(data, run, stop_after_steps=4)))   # 4 steps = epoch 1; stops after its checkpoint
    first = {name: (run / name).read_bytes() for name in ("last.pth.tar", "metrics.csv")}
    launch(resolve_config(train_argv(data, run, **resume)))
    full = (run / "metrics.csv").read_bytes()
    rows = read_metrics(run / "metrics.csv")
    assert sorted((r["epoch"], r["dataset"], r["split"]) for r in rows) == sorted(
        (e, d, s) for e in (1, 2) for d in ("koniq10k", "csiq") for s in ("train", "test"))
    # killed between epoch 2's metrics and its checkpoint (the order before: metrics appended first): the resume
    # trains epoch 2 again and writes its rows once
    (run / "last.pth.tar").write_bytes(first["last.pth.tar"])
    launch(resolve_config(train_argv(data, run, **resume)))
    assert (run / "metrics.csv").read_bytes() == full
    # killed after epoch 2's checkpoint, before its metrics: the resume rewrites them from the checkpoint
    (run / "metrics.csv").write_bytes(first["metrics.csv"])
    launch(resolve_config(train_argv(data, run, **resume)))
    assert (run / "metrics.csv").read_bytes() == full


def _metrics(folder: Path, text: str, finished: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.csv").write_text(text)
    if finished:
        (folder / "summary.json").write_text("{}")
    return folder


HEADER = "epoch,dataset,split,srocc,plcc,krcc,rmse,loss\n"


def test_summariser_reads_what_older_trainers_wrote_and_says_so(tmp_path):
    # epoch 2 written twice (a resume after a kill between the metrics and the checkpoint), then a row cut short
    run = _metrics(tmp_path / "run", HEADER + "1,live,test,0.5,0.5,0.4,0.1,nan\n2,live,test,0.7,0.7,0.6,0.1,nan\n"
                   "2,live,test,0.7,0.7,0.6,0.1,nan\n3,live,test,0.6,0.6,0.5,0.1,nan\n4,live,te")
    with pytest.warns(UserWarning) as caught:
        result = summary.read_seed_run(run)
    messages = [str(w.message) for w in caught]
    assert any(f"{run / 'metrics.csv'}: line 6 is incomplete" in m for m in messages)
    assert any("epoch(s) 2 written more than once" in m for m in messages)
    assert result.epochs["best"] == {"live": 2} and result.epochs["last"] == {"live": 3}
    assert result.values["best"]["live"]["srocc"] == 0.7


@pytest.mark.parametrize("text,message", [
    ("a,b\n1,2\n", "not a training metrics.csv (no column epoch, dataset, split, srocc, plcc"),
    (HEADER + "one,live,test,0.5,0.5,0.4,0.1,nan\n", "line 2: epoch 'one' is not a whole number"),
    (HEADER + "1,live,test,high,0.5,0.4,0.1,nan\n", "line 2: srocc 'high' is not a number"),
    (HEADER + "1,live,test,0.5\n1,live,train,0.5,0.5,0.4,0.1,0.2\n", "line 2: expected the 8 columns of the header"),
    (HEADER + "1,live,valid,0.5,0.5,0.4,0.1,nan\n", "line 2: split 'valid' is not one of train, test, val"),
])
def test_summarise_refuses_a_malformed_metrics_csv_in_one_line(tmp_path, capsys, text, message):
    run = _metrics(tmp_path / "run", text)
    assert summary.main([str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {run / 'metrics.csv'}") and message in err[0]
    assert sorted(p.name for p in run.iterdir()) == ["metrics.csv", "summary.json"]   # no summary written


def test_summarise_refuses_a_path_that_is_not_a_run(tmp_path, capsys):
    typo = tmp_path / "runs" / "ten_spilts"
    assert summary.main([str(typo)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {typo}: no such folder (expected a training run or a 10-split folder of seed_*/ runs)"]
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert summary.main([str(empty)]) == 1
    assert "is not a run folder" in capsys.readouterr().err and not any(empty.iterdir())
    binary = _metrics(tmp_path / "binary", "")
    (binary / "metrics.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert summary.main([str(binary)]) == 1
    assert "metrics.csv: not a text file" in capsys.readouterr().err


# ---------------------------------------------------------------- item 5: numeric options


@pytest.mark.parametrize("option,value,message", [
    ("eval_every", 0, "--eval_every must be at least 1, got 0"),
    ("log_every", 0, "--log_every must be at least 1, got 0"),
    ("epochs", 0, "--epochs must be at least 1, got 0"),
    ("epochs", -2, "--epochs must be at least 1, got -2"),
    ("batch_size", 0, "--batch_size must be at least 1 and at most 1048576, got 0"),
    ("workers", -1, "--workers must be at least 0 and at most 1024, got -1"),
    ("random_flipping_rate", 1.5, "--random_flipping_rate must be at least 0 and at most 1, got 1.5"),
    ("random_scale_rate", -0.1, "--random_scale_rate must be at least 0 and at most 1, got -0.1"),
    ("lr", -0.5, "--lr must be at least 0, got -0.5"),
    ("lr", "nan", "--lr must be a finite number, got nan"),
    ("drop", 1.0, "--drop must be at least 0 and below 1, got 1.0"),
    ("eval_batch_size", 0, "--eval_batch_size must be at least 1 and at most 1048576, got 0"),
    ("groups_per_process", 0, "--groups_per_process must be at least 1, got 0"),
    ("stop_after_steps", 0, "--stop_after_steps must be at least 1, got 0"),
    ("clip_grad", 0, "--clip_grad must be above 0, got 0.0"),
])
def test_numeric_options_are_refused_before_any_work(data, train_argv, tmp_path, capsys, option, value, message):
    run = tmp_path / "run"
    code, err = _train(train_argv(data, run, **{option: value}), capsys)
    assert (code, err) == (1, [f"error: {message}"])
    assert not run.exists()


def test_test_py_and_the_isp_tools_refuse_bad_numbers(tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--checkpoint", str(tmp_path / "missing.pth.tar"), "--dataset", "koniq10k", "--save_path", str(out)]
    for argv, message in [(["--isp_num", "0"], "--isp_num must be at least 1, got 0"),
                          (["--batch_size", "0"], "--batch_size must be at least 1 and at most 1048576, got 0"),
                          (["--isp_seed", "-1"], "--isp_seed must be at least 0 and at most 4294967295, got -1")]:
        assert runner.main(base + argv) == 1
        assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
    for argv, message in [(["size", "--sizes", "3", "0"], "--sizes must be at least 1, got 0"),
                          (["selection", "--draws", "0"], "--draws must be at least 1, got 0"),
                          (["perturb", "--isp_num", "0"], "--isp_num must be at least 1, got 0")]:
        assert run_command(lambda: isp_main(argv + base)) == 1
        assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
    assert not out.exists()


def test_out_of_range_seeds_workers_and_batch_sizes_are_one_line_everywhere(tmp_path, capsys):
    """--workers 100000, a --batch_size beyond int64 and --seed >= 2^32 failed deep inside (or hung); `isp --seed -1`
    was accepted: every command refuses them by the one table of ranges, before any work."""
    from promptiqa.cli import main

    out = tmp_path / "out"
    big = "99999999999999999999999"
    cases = [
        (["train", "--save_path", str(out), "--seed", str(2 ** 32)], "--seed must be at least 0 and at most 4294967295"),
        (["train", "--save_path", str(out), "--workers", "100000"], "--workers must be at least 0 and at most 1024"),
        (["train", "--save_path", str(out), "--batch_size", big], "--batch_size must be at least 1 and at most 1048576"),
        (["test", "--checkpoint", "c.pth.tar", "--save_path", str(out), "--workers", "100000"], "--workers must be"),
        (["test", "--checkpoint", "c.pth.tar", "--save_path", str(out), "--isp_seed", str(2 ** 32)], "--isp_seed must"),
        (["isp", "--dataset", "koniq10k", "--root", str(tmp_path), "--seed", "-1"], "--seed must be at least 0"),
        (["isp", "--dataset", "koniq10k", "--root", str(tmp_path), "--seed", str(2 ** 32)], "at most 4294967295"),
        (["score", "--checkpoint", "c.pth.tar", "--prompt", "p.csv", "--workers", "100000", "x.png"],
         "--workers must be at least 0 and at most 1024, got 100000"),
        (["score", "--checkpoint", "c.pth.tar", "--prompt", "p.csv", "--batch_size", big, "x.png"],
         f"--batch_size must be at least 1 and at most 1048576, got {big}"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 1, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (argv, lines)
    assert not out.exists()


# ---------------------------------------------------------------- item 6: atomic files, full disks, orphans


def _limited(limit: int):
    """preexec_fn: files this process writes may not grow past ``limit`` bytes (writes then fail with EFBIG,
    as on a full disk; Python ignores SIGXFSZ)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(data, train_argv, run_copy):
    run, last = run_copy, run_copy / "last.pth.tar"
    before = last.read_bytes()
    cmd = [sys.executable, str(ROOT / "train.py"), *train_argv(data, run, resume=last, stop_after_steps=1)]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limited(len(before) - 1))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: could not write {last}: File too large (the previous last.pth.tar is unchanged)")
    assert last.read_bytes() == before
    assert not list(run.glob(".*.tmp"))


def test_test_py_on_a_full_disk_keeps_earlier_results_whole(data, stopped, tmp_path):
    out = tmp_path / "test"
    argv = ["--checkpoint", str(stopped / "last.pth.tar"), "--dataset", "koniq10k", "csiq", "--split_file",
            "checkpoint", "-j", "0", "--device", "cpu", "--save_path", str(out), "--progress", "false"]
    argv += [a for key in ("koniq10k", "csiq") for a in ("--data_root", f"{key}={data[key]}")]
    assert runner.main(argv) == 0
    before = _snapshot(out)
    small = max(len(before["results.csv"]), len(before["predictions.csv"]))
    assert len(before["results.json"]) > small + 100
    proc = subprocess.run([sys.executable, str(ROOT / "test.py"), *argv], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300, preexec_fn=_limited(small + 50))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: could not write {out / 'results.json'}: File too large (the previous results.json is unchanged)")
    after = _snapshot(out)
    assert sorted(after) == sorted(before) and after["results.json"] == before["results.json"]
    assert after["scatter.png"] == before["scatter.png"] and all(after.values())   # no empty or half file


def test_orphaned_checkpoint_temp_files_are_removed_on_resume(data, train_argv, run_copy, capsys):
    run = run_copy
    orphan = run / ".last.pth.tar.k1ll3d.tmp"
    orphan.write_bytes(b"\0" * 4096)   # what a kill -9 during torch.save leaves
    # resumed at step 1 of 4, three more steps: the stop falls on the epoch's last step, so the epoch ends first
    code, _ = _train(train_argv(data, run, resume=run / "last.pth.tar", stop_after_steps=3), capsys)
    assert code == 0 and not orphan.exists()
    log = (run / "log.txt").read_text()
    assert "removed .last.pth.tar.k1ll3d.tmp, the temporary file of an interrupted write" in log
    state = read_checkpoint(run / "last.pth.tar")
    assert (state["epoch"], state["step"]) == (1, 0)
    # item 12: the epoch's training figures say they cover the steps after the resume only
    note = "resumed mid-epoch at step 1 of 4: the training loss and figures cover steps 2-4 only"
    train = [r for r in read_metrics(run / "metrics.csv") if r["split"] == "train"]
    assert train and all(r["note"] == note for r in train) and f"({note})" in log


# ---------------------------------------------------------------- item 10: one line instead of a traceback


def test_train_py_save_path_that_is_a_file(data, train_argv, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("my notes\n")
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *train_argv(data, target)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: --save_path {target} is a file, not a folder; give a folder for the run's files"]
    assert target.read_text() == "my notes\n"


def test_unknown_or_missing_devices_are_one_line(data, train_argv, tmp_path, capsys):
    here = ", ".join(["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))])   # devices.resolve_device
    cases = [("tpu9", f"--device tpu9: not a device torch knows; available here: {here}"),
             ("meta", f"--device meta: not available on this machine; available here: {here}")]
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    cases.append((missing, f"--device {missing}: not available on this machine; available here: {here}"))
    for device, message in cases:
        code, err = _train(train_argv(data, tmp_path / "run", device=device), capsys)
        assert (code, err) == (1, [f"error: {message}"])
        assert runner.main(["--checkpoint", "x.pth.tar", "--dataset", "koniq10k", "--device", device]) == 1
        assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text,message", [
    ("epochs: 1.5\n", "epochs: expected an integer, got float 1.5"),
    ("batch_size: yes\n", "batch_size: expected an integer, got bool True"),
    ("dataset: live\n", "dataset: expected a list of strings, got str 'live'"),
    ("amp: bf17\n", "amp: expected one of bf16, none, got 'bf17'"),
    ("amp: fp16\n", "amp: fp16 is not offered: MAL's unscaled attention energies overflow float16"),
    ("epochs: 0\n", "epochs must be at least 1, got 0"),
    ("epochs: [1\n", "not valid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'"),
    ("- live\n- csiq\n", "expected a mapping of settings, got list"),
    ("epochs: 3\n\tlr: 1\n", "not valid YAML at line 2"),
])
def test_malformed_or_mistyped_config_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        resolve_config(["--config", str(path)])
    assert str(err.value).startswith(f"{path}: {message}")


def test_config_files_take_numbers_yaml_reads_as_strings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-5\nweight_decay: 2\nclip_grad: 1E-3\n")   # YAML 1.1: '1e-5' is a string
    cfg = resolve_config(["--config", str(path)])
    assert (cfg.lr, cfg.weight_decay, cfg.clip_grad) == (1e-5, 2, 1e-3) and isinstance(cfg.lr, float)


def test_split_files_lacking_the_dataset_or_mistyped(data, train_argv, tmp_path, capsys):
    only = tmp_path / "only_koniq.json"
    save_splits(only, {"koniq10k": make_split(load_dataset("koniq10k", data["koniq10k"]), 2024)})
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "promptiqa-splits", "version": 1,
                                 "splits": {"koniq10k": ["a.jpg"], "csiq": {"train": "x", "test": []}}}))
    cases = [(only, f"split file {only} has no split for dataset 'csiq' (it has: koniq10k)"),
             (wrong, f"split file {wrong}: entry 'koniq10k' needs 'train' and 'test' lists of unit names")]
    for path, message in cases:
        code, err = _train(train_argv(data, tmp_path / "run", split_file=path), capsys)
        assert (code, err) == (1, [f"error: {message}"])
    assert not (tmp_path / "run").exists()


def test_ten_splits_restarts_a_seed_killed_before_its_first_checkpoint_and_resumes_the_others(data, train_argv,
                                                                                               tmp_path, capsys):
    root = tmp_path / "ten"
    args = [a for a in train_argv(data, tmp_path / "unused", epochs=1) if a != str(tmp_path / "unused")]
    args.remove("--save_path")
    killed = root / "seed_2024"   # what a kill during data loading leaves: the start files, no checkpoint
    killed.mkdir(parents=True)
    (killed / "config.json").write_text("{}")
    (killed / "log.txt").write_text("[...] promptiqa 0.1.0: ...\n")
    seed_2025 = train_argv(data, root / "seed_2025", epochs=1, seed=2025, stop_after_steps=1)
    assert launch(resolve_config(seed_2025))["stopped"]
    from promptiqa.experiments.protocol import ten_splits_main

    assert ten_splits_main(["--seeds", "2024", "2025", "--tests", "--save_path", str(root), *args]) == 0
    out = capsys.readouterr().out
    assert f"{killed}: the interrupted training saved no checkpoint; starting it again" in out
    assert f"{root / 'seed_2025'}: resuming the interrupted training" in out
    for seed in (2024, 2025):
        assert (root / f"seed_{seed}" / "DONE.json").is_file()
        assert read_checkpoint(root / f"seed_{seed}" / "last.pth.tar")["epoch"] == 1
    assert (killed / "log.txt").read_text().count("] promptiqa ") == 1   # the killed start's log was replaced


# ---------------------------------------------------------------- issue 34, item 5: resume


def _errors(code, lines):
    """(exit code, the error lines among stderr's lines: progress bars also write there)."""
    return code, [line for line in lines if line.startswith("error: ")]


def test_resume_refuses_non_finite_state_and_link_loops_in_one_line(data, train_argv, run_copy, tmp_path, capsys):
    """A last.pth.tar holding NaN (weights or optimiser state: training from it only produces NaN) is refused at
    --resume, as is a --resume that is a loop of symbolic links (a RuntimeError traceback before)."""
    run, saved = run_copy, read_checkpoint(run_copy / "last.pth.tar")
    poisoned = {"weights": tmp_path / "nan_weights.pth.tar", "optimizer": tmp_path / "nan_adam.pth.tar"}
    weights = {k: v.clone() for k, v in saved["state_dict"].items()}
    next(v for v in weights.values() if v.is_floating_point()).view(-1)[0] = float("nan")
    torch.save(dict(saved, state_dict=weights), poisoned["weights"])
    optimizer = dict(saved["optimizer"], state={i: {k: (v.clone().fill_(float("inf")) if k == "exp_avg_sq" else v)
                                                    for k, v in s.items()}
                                                for i, s in saved["optimizer"]["state"].items()})
    torch.save(dict(saved, optimizer=optimizer), poisoned["optimizer"])
    loop = tmp_path / "loop.pth.tar"
    loop.symlink_to(tmp_path / "loop2.pth.tar")
    (tmp_path / "loop2.pth.tar").symlink_to(loop)
    for what, path in poisoned.items():
        code, err = _errors(*_train(train_argv(data, tmp_path / f"new_{what}", resume=path), capsys))
        assert code == 1 and len(err) == 1 and f"--resume {path}: its {what} hold NaN or infinity" in err[0], err
        assert not (tmp_path / f"new_{what}").exists()
    for folder in (tmp_path / "new_loop", run):   # a new folder, and the run's own (where the folder check looks)
        code, err = _errors(*_train(train_argv(data, folder, resume=loop), capsys))
        assert code == 1 and len(err) == 1 and f"--resume {loop}: cannot be followed" in err[0], err


def test_a_run_that_fails_in_epoch_1_says_how_to_rerun_and_logs_why(data, train_argv, tmp_path, capsys, monkeypatch):
    """No last.pth.tar exists after an epoch-1 failure: the error and the rerun's refusal offer --overwrite (not a
    --resume that cannot work), the run's log.txt records the error, and --overwrite then runs."""
    from promptiqa.engine import loop as loop_module

    run, real = tmp_path / "run", loop_module.F.l1_loss
    monkeypatch.setattr(loop_module.F, "l1_loss", lambda pred, target: real(pred, target) * float("nan"))
    code, err = _errors(*_train(train_argv(data, run, log_every=1), capsys))
    assert code == 1 and len(err) == 1 and "non-finite training loss nan at epoch 1, step 1" in err[0], err
    assert "No checkpoint had been written yet: start again with --overwrite" in err[0]
    assert not (run / "last.pth.tar").exists()
    assert "stopped by an error: non-finite training loss nan at epoch 1" in (run / "log.txt").read_text()
    monkeypatch.setattr(loop_module.F, "l1_loss", real)
    code, err = _errors(*_train(train_argv(data, run, stop_after_steps=1), capsys))
    assert code == 1 and "stopped before its first checkpoint, so there is no last.pth.tar to resume: pass " \
                         "--overwrite to start it again" in err[0] and "--resume" not in err[0], err
    code, _ = _train(train_argv(data, run, stop_after_steps=1, overwrite=True), capsys)
    assert code == 0 and (run / "last.pth.tar").is_file()


def test_weights_that_turn_non_finite_after_a_finite_loss_are_never_saved(data, train_argv, run_copy, capsys,
                                                                          monkeypatch):
    """An update can overflow the weights after a finite loss: last.pth.tar is not replaced by them."""
    from promptiqa.engine import checkpointing

    run = run_copy
    good = (run / "last.pth.tar").read_bytes()
    real = checkpointing.Checkpoints.save_last

    def poison_then_save(self, model, optimizer, *args):
        with torch.no_grad():
            next(p for p in model.parameters() if p.is_floating_point()).view(-1)[0] = float("inf")
        return real(self, model, optimizer, *args)

    monkeypatch.setattr(checkpointing.Checkpoints, "save_last", poison_then_save)
    code, err = _errors(*_train(train_argv(data, run, resume=run / "last.pth.tar"), capsys))
    assert code == 1 and len(err) == 1 and "the weights hold NaN or infinity" in err[0], err
    assert f"{run / 'last.pth.tar'} (the previous epoch's) was kept" in err[0]
    assert (run / "last.pth.tar").read_bytes() == good


# ---------------------------------------------------------------- issue 34, item 1: outputs never replace inputs


def test_isp_out_never_replaces_a_dataset_file_or_the_split_file(tmp_path, capsys):
    """`isp --out` used to overwrite, silently and with exit 0, the label file, a dataset image or the --split_file."""
    from promptiqa.cli import main
    from tests.fixtures.datasets import build_fixture

    labels = build_fixture("csv", tmp_path / "mine")                 # the csv kind: the root is the label file
    koniq = build_fixture("koniq10k", tmp_path / "koniq")             # a built-in kind: a folder with its label file
    split_file = tmp_path / "splits.json"
    save_splits(split_file, {"koniq10k": make_split(load_dataset("koniq10k", koniq), 2024)})
    koniq_label = next(p for p in koniq.rglob("*.csv"))
    koniq_image = next(p for p in koniq.rglob("*.jpg"))
    cases = [(["--dataset", "mine", "--root", labels], labels, "is the label file of mine"),
             (["--dataset", "mine", "--root", labels], next(labels.parent.rglob("*.png")), "is an image of mine"),
             (["--dataset", "koniq10k", "--root", koniq, "--split_file", split_file], split_file,
              "is the --split_file"),
             (["--dataset", "koniq10k", "--root", koniq], koniq_image, "is an image of koniq10k"),
             (["--dataset", "koniq10k", "--root", koniq], koniq_label, "is a file in koniq10k's folder")]
    for args, target, expected in cases:
        before = target.read_bytes()
        capsys.readouterr()
        code = main(["isp", *map(str, args), "--out", str(target)])
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and expected in lines[0] and "refusing to overwrite" in lines[0], lines
        assert target.read_bytes() == before and out == ""
    assert main(["isp", "--dataset", "mine", "--root", str(labels), "--isp_num", "5", "--out",
                 str(tmp_path / "prompt.csv")]) == 0


# ---------------------------------------------------------------- issue 34, item 4: one run per folder at a time


def test_two_runs_into_one_folder_at_once_the_second_is_refused(data, train_argv, tmp_path, capsys):
    """Two train.py into one --save_path at once both exited 0 with a mixed folder: the first holds the folder's
    lock for its whole run, the second is one line naming it; the lock dies with its process (SIGKILL leaves no
    stale lock), and a refused run leaves no folder behind."""
    import signal
    import time

    from promptiqa.engine.run_folder import LOCK

    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *train_argv(data, run, epochs=50)], cwd=ROOT,
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (run / LOCK).exists() and first.poll() is None:
            time.sleep(0.1)
        assert first.poll() is None and (run / LOCK).exists(), first.stderr.read()[-2000:] if first.poll() else ""
        code, err = _errors(*_train(train_argv(data, run, stop_after_steps=1), capsys))
        assert code == 1 and len(err) == 1 and f"--save_path {run} is in use by pid {first.pid} on " in err[0], err
        code, err = _errors(*_train(train_argv(data, run, stop_after_steps=1, overwrite=True), capsys))
        assert code == 1 and "is in use by" in err[0]                        # --overwrite does not break in either
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert (run / LOCK).exists()                                             # left by the killed run, but not held
    code, _ = _train(train_argv(data, run, stop_after_steps=1, overwrite=True), capsys)
    assert code == 0 and not (run / LOCK).exists()                           # released (and removed) at the end
    missing = dict(data, csiq=str(tmp_path / "nowhere"))                    # refused after the lock was taken
    code, err = _errors(*_train(train_argv(missing, tmp_path / "new" / "run"), capsys))
    assert code == 1 and "nowhere" in err[0] and not (tmp_path / "new").exists()   # the lock's folder went with it
