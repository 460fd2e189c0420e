"""The first run on a cluster: launcher environments mapped to ranks, nodes and GPUs; collectives that outlast slow
work; teardown and stop signals on every rank; train.sh on a shared node (CPU, gloo, micro model)."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from promptiqa.config import TrainConfig, resolve_config
from promptiqa.distributed import (DEFAULT_DIST_TIMEOUT_S, DIST_TIMEOUT_ENV, LaunchError, check_distinct_gpus,
                                   check_launch, cuda_index, dist_timeout, read_launch, slurm_tasks_per_node)
from promptiqa.engine.trainer import launch
from promptiqa.errors import ConfigError
from promptiqa.models import read_checkpoint
from tests.fixtures.launchers import INJECTED, ROOT, job_env, slurm_env, start_nodes, torchrun, wait_for, wait_nodes


# ---------------------------------------------------------------- launcher environments -> ranks, nodes, GPUs

def _placement(cfg: TrainConfig, environ: dict, gpus: int, local_index=None):
    """(mode, rank, world size, local rank, processes per node, CUDA index) a process would take with ``gpus``
    visible GPUs."""
    launch_ = read_launch(cfg, local_index, environ)
    per_node = launch_.local_world_size
    return (launch_.mode, launch_.rank, launch_.world_size, launch_.local_rank, per_node,
            cuda_index(launch_.local_rank, per_node or 1, gpus, cfg.gpu))


SPAWN = dict(multiprocessing_distributed=True, nprocs=3, world_size=2, rank=1, dist_url="tcp://node0:23456")
TORCHRUN = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "node0",
            "MASTER_PORT": "29500"}


@pytest.mark.parametrize("cfg, local_index, environ, gpus, expected", [
    # spawn (train.sh, the official --multiprocessing-distributed): node 1 of 2, its third process
    (SPAWN, 2, {}, 3, ("spawn", 5, 6, 2, 3, 2)),
    # torchrun, 2 nodes x 4
    ({}, None, TORCHRUN, 4, ("torchrun", 5, 8, 1, 4, 1)),
    # srun --ntasks-per-node 3 on 2 nodes, every GPU of the node visible to every task
    ({}, None, slurm_env(4, 2, 3, "ntasks-per-node", 29500), 3, ("slurm", 4, 6, 1, 3, 1)),
    # srun --ntasks 6 --nodes 2 (no --ntasks-per-node): SLURM_TASKS_PER_NODE=3(x2) says the same
    ({}, None, slurm_env(4, 2, 3, "tasks-per-node", 29500), 3, ("slurm", 4, 6, 1, 3, 1)),
    # srun --gpus-per-task=1: each task sees one GPU of its own, its cuda:0
    ({}, None, slurm_env(4, 2, 3, "tasks-per-node", 29500), 1, ("slurm", 4, 6, 1, 3, 0)),
    # the step's layout wins over the job's (srun inside an allocation of 4 per node)
    ({}, None, {**slurm_env(1, 2, 3, "tasks-per-node", 29500), "SLURM_TASKS_PER_NODE": "4(x2)",
                "SLURM_STEP_TASKS_PER_NODE": "3(x2)", "SLURM_STEP_NUM_TASKS": "6"}, 3, ("slurm", 1, 6, 1, 3, 1)),
    # a job-level SLURM_NTASKS_PER_NODE that does not describe this step is not trusted: the hosts decide
    ({}, None, {**slurm_env(1, 1, 2, "none", 29500), "SLURM_NTASKS_PER_NODE": "4"}, 2, ("slurm", 1, 2, 1, None, 1)),
    # one process
    ({}, None, {}, 1, ("single", 0, 1, 0, 1, 0)),
    ({"gpu": 1}, None, {}, 2, ("single", 0, 1, 0, 1, 1)),
])
def test_launcher_environments_map_to_ranks_nodes_and_gpus(cfg, local_index, environ, gpus, expected):
    assert _placement(TrainConfig(**cfg), environ, gpus, local_index) == expected


def test_launch_layouts_that_cannot_work_are_refused_in_one_line():
    assert slurm_tasks_per_node("3(x2),2") == [3, 3, 2] and slurm_tasks_per_node("4") == [4]
    unequal = {**slurm_env(0, 2, 3, "none", 1), "SLURM_NTASKS": "5", "SLURM_TASKS_PER_NODE": "3,2"}
    with pytest.raises(LaunchError, match=r"SLURM_TASKS_PER_NODE=3,2: the nodes run different numbers of processes "
                                          r"\(3, 2\)"):
        read_launch(TrainConfig(), None, unequal)
    with pytest.raises(LaunchError, match="4 processes per node but each process sees 2 GPUs"):
        cuda_index(1, 4, 2)
    with pytest.raises(LaunchError, match="--gpu 0 with 2 processes per node would put every process on one GPU"):
        cuda_index(1, 2, 2, gpu=0)
    with pytest.raises(LaunchError, match=r"--device cuda:3: this process sees 2 GPU\(s\)"):
        cuda_index(0, 1, 2, requested=3)
    with pytest.raises(LaunchError, match="ranks 0 and 2 both use GPU GPU-a on n1"):
        check_distinct_gpus(["n1/GPU-a", "n1/GPU-b", "n1/GPU-a"])
    check_distinct_gpus(["n1/GPU-a", "n2/GPU-a", None])
    with pytest.raises(LaunchError, match="a loopback address cannot be reached from the other 1 node"):
        check_launch(TrainConfig(multiprocessing_distributed=True, world_size=2, dist_url="tcp://localhost:1234"))
    with pytest.raises(LaunchError, match="needs the address of node 0: --dist-url tcp://NODE0_HOST:PORT"):
        check_launch(TrainConfig(multiprocessing_distributed=True, world_size=2))
    with pytest.raises(LaunchError, match="--gpu 1 with 2 processes would put every process on GPU 1"):
        check_launch(TrainConfig(multiprocessing_distributed=True, nprocs=2, gpu=1))
    check_launch(TrainConfig(multiprocessing_distributed=True, world_size=2, dist_url="tcp://10.0.0.1:1234"))


def test_train_py_refuses_a_loopback_address_across_nodes_before_creating_anything(data, train_argv, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *train_argv(data, run),
                           "--multiprocessing-distributed", "--world-size", "2", "--rank", "0", "--dist-url",
                           "tcp://127.0.0.1:23456"], cwd=ROOT, env=job_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(
        "error: --dist-url tcp://127.0.0.1:23456: a loopback address cannot be reached"), proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and not run.exists()


def test_collective_timeout_option_and_environment_variable(monkeypatch):
    assert dist_timeout(TrainConfig(), {}) == DEFAULT_DIST_TIMEOUT_S == 3600
    assert dist_timeout(TrainConfig(), {DIST_TIMEOUT_ENV: "90"}) == 90
    assert dist_timeout(TrainConfig(dist_timeout=5), {DIST_TIMEOUT_ENV: "90"}) == 5   # the option wins
    with pytest.raises(ConfigError, match=f"{DIST_TIMEOUT_ENV}='soon': expected a positive number of seconds"):
        dist_timeout(TrainConfig(), {DIST_TIMEOUT_ENV: "soon"})
    with pytest.raises(ConfigError, match="--dist_timeout must be above 0"):
        resolve_config(["--dist_timeout", "0"])


# ---------------------------------------------------------------- runs of two processes (gloo)

def test_slow_fingerprinting_on_every_rank_outlasts_the_collective_timeout(data, train_argv, tmp_path):
    """The train images' fingerprints (the checkpoints' leakage guard) are read before training, shared over the
    ranks: each rank here reads its half of koniq10k at 0.4 s per file, ~4 s, past a 3-second collective timeout,
    and the run still completes (read on rank 0 alone at the first checkpoint, the other rank timed out)."""
    run = tmp_path / "run"
    slow = {"fingerprint_delay": {"match": "koniq", "seconds": 0.4, "ranks": [0, 1]}}
    proc = torchrun(train_argv(data, run, epochs=1, dist_timeout=3), inject=slow)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "last.pth.tar").is_file() and (run / "best_model.pth.tar").is_file()
    log = (run / "log.txt").read_text()
    took = float(log.split("fingerprinted 35 training images in ")[1].split(" s")[0])
    assert took > 3, log
    assert "process group gloo of 2 (a collective waits 3 s for the others)" in log
    recorded = read_checkpoint(run / "last.pth.tar")["config"]["splits"]
    assert [len(recorded[k]["train_fingerprints"]) for k in ("koniq10k", "csiq")] == [19, 16]
    # the timeout is real: the same delay on rank 0 alone (~8 s) ends the job after ~3 s, on both ranks
    started = time.time()
    alone = torchrun(train_argv(data, tmp_path / "alone", epochs=1, dist_timeout=3),
                     inject={"fingerprint_delay": {"match": "koniq", "seconds": 0.8, "ranks": [0]}})
    assert alone.returncode != 0 and time.time() - started < 120
    assert "error: rank 1 lost another process of the job (Timed out" in alone.stderr, alone.stderr[-3000:]


def test_every_rank_tears_down_its_process_group_on_every_exit(data, train_argv, tmp_path):
    # two tasks as srun starts them (no agent that would kill the survivor first)
    finished, failed = tmp_path / "finished", tmp_path / "failed"
    results = wait_nodes(start_nodes(train_argv(data, tmp_path / "ok", epochs=1), "slurm:tasks-per-node", nodes=1,
                                     per_node=2, inject={"marks": str(finished)}))
    assert [code for code, _, _ in results] == [0, 0], results[0][2][-3000:] + results[1][2][-3000:]
    assert {p.name for p in finished.glob("*.destroyed")} == {"rank0.destroyed", "rank1.destroyed"}
    # and then ended without the interpreter's shutdown, where gloo's threads could abort them (end_process)
    assert not list(finished.glob("*.shutdown")) and (tmp_path / "ok" / "last.pth.tar").is_file()
    # rank 1 raises in its second step (a bug: a traceback); rank 0, waiting for it in the gradient all-reduce,
    # stops with one line; both tear their group down
    (code0, _, err0), (code1, _, err1) = wait_nodes(start_nodes(
        train_argv(data, tmp_path / "bad", epochs=1), "slurm:tasks-per-node", nodes=1, per_node=2,
        inject={"marks": str(failed), "fail": {"rank": 1, "step": 2}}), timeout=180)
    assert code1 != 0 and "ValueError: injected failure on rank 1 in step 2" in err1, err1[-3000:]
    assert code0 == 1 and err0.strip().splitlines()[-1].startswith("error: rank 0 lost another process of the job"), \
        err0[-3000:]
    assert {p.name for p in failed.glob("*.destroyed")} == {"rank0.destroyed", "rank1.destroyed"}
    assert "terminate called" not in err0 + err1


def test_a_stop_signal_to_one_rank_stops_every_rank_within_a_step(data, train_argv, tmp_path):
    """SIGTERM to rank 0 only, mid-epoch, with no logging step for 1000 steps: both ranks agree on it (no blocking
    per-step sync) and stop after the same step, the one in progress or the next (the vote posted after a step is
    read after the next), with a resumable checkpoint."""
    run, marks = tmp_path / "run", tmp_path / "marks"
    # 2 ranks x one group of 3: 5 steps an epoch; each step padded to 0.5 s so the signal lands mid-step
    args = train_argv(data, run, epochs=50, batch_size=6, log_every=1000)
    procs = start_nodes(args, "torchrun", nodes=1, per_node=2, inject={"marks": str(marks), "step_sleep": 0.5})
    try:
        wait_for(marks / "rank0.step1", 300, procs)
        steps_seen = len(list(marks.glob("rank0.step*")))
        os.kill(int((marks / "rank0.pid").read_text()), signal.SIGTERM)
        (code, out, err), = wait_nodes(procs, timeout=180)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert code == 0, err[-3000:]
    state = read_checkpoint(run / "last.pth.tar")
    assert state["epoch"] == 0 and steps_seen + 1 <= state["step"] <= min(steps_seen + 2, 4), (state, steps_seen)
    assert len(list(marks.glob("rank0.step*"))) == len(list(marks.glob("rank1.step*"))) == state["step"]
    assert f"stopped at epoch 1, step {state['step']}" in (run / "log.txt").read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_to_the_whole_process_group_with_loader_workers_stops_cleanly(data, train_argv, tmp_path,
                                                                                     signum):
    """A scheduler's SIGTERM (to every process of the job) and a terminal's Ctrl-C (to the foreground process group)
    reach the DataLoader workers too: they ignore it, the main process finishes its step and saves a checkpoint
    the run resumes from."""
    run, marks = tmp_path / "run", tmp_path / "marks"
    cmd = [sys.executable, str(INJECTED), *train_argv(data, run, epochs=50, log_every=1000, workers=2)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=job_env({"marks": str(marks), "step_sleep": 0.3}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(marks / "rank0.step2", 300, [proc])
        os.killpg(proc.pid, signum)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    assert "stopped at epoch" in (run / "log.txt").read_text() and "exited unexpectedly" not in err
    state = read_checkpoint(run / "last.pth.tar")
    resumed = launch(resolve_config(train_argv(data, run, epochs=state["epoch"] + 1, workers=2,
                                               resume=run / "last.pth.tar")))
    assert not resumed["stopped"]


def test_loader_workers_ignore_a_strangers_sigterm_but_not_their_parents(tmp_path):
    """A scheduler's SIGTERM leaves the workers running; their parent still ends one that is stuck (a hung read)
    when it gives up, and the process exits instead of waiting for it forever."""
    program = textwrap.dedent("""
        import multiprocessing, subprocess, sys, time
        import torch
        from promptiqa.data.images import ImageLoader

        class Stuck(torch.utils.data.Dataset):
            def __len__(self):
                return 100
            def __getitem__(self, i):
                if i >= 4:
                    time.sleep(1000)   # a read that never returns
                return torch.zeros(3)

        batches = iter(ImageLoader(Stuck(), batch_size=2, num_workers=2))
        next(batches), next(batches)   # one batch from each worker: both have started
        workers = multiprocessing.active_children()
        subprocess.run(["kill", "-TERM", *[str(w.pid) for w in workers]], check=True)   # sent by another process
        time.sleep(1.5)
        print("alive after a stranger's SIGTERM:", sum(w.is_alive() for w in workers), flush=True)
        sys.exit(3)   # giving up with a worker stuck: the loader and multiprocessing end them with SIGTERM
    """)
    started = time.time()
    proc = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=job_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3 and "alive after a stranger's SIGTERM: 2" in proc.stdout, proc.stderr[-2000:]
    assert time.time() - started < 60 and proc.stderr == ""


def test_one_process_can_train_through_a_process_group_and_ddp(data, train_argv, tmp_path):
    """--ddp: one process builds its own group and wraps the model in DDP (the path a one-GPU NCCL check takes);
    the weights are those of the plain run, bit for bit."""
    plain, ddp = tmp_path / "plain", tmp_path / "ddp"
    launch(resolve_config(train_argv(data, plain, epochs=1)))
    launch(resolve_config(train_argv(data, ddp, epochs=1, ddp="true")))
    assert "process group gloo of 1" in (ddp / "log.txt").read_text()
    assert "no process group" in (plain / "log.txt").read_text()
    a, b = read_checkpoint(plain / "last.pth.tar")["state_dict"], read_checkpoint(ddp / "last.pth.tar")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.distributed.is_initialized()


def _local_main_first_worker(index: int, port: int, folder: str, fail: bool) -> None:
    import torch.distributed as dist

    from promptiqa.distributed import DistEnv, local_main_first
    from promptiqa.models.promptiqa import BackboneWeightsError

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=index, world_size=2)
    env = DistEnv(rank=index, world_size=2, local_rank=index, local_world_size=2)

    def fetch():
        if fail and index == 0:
            raise BackboneWeightsError("offline: could not download the backbone")
        Path(folder, f"start{index}").write_text(str(time.time()))
        time.sleep(1.0 if index == 0 else 0)
        Path(folder, f"end{index}").write_text(str(time.time()))
        return index

    try:
        result = local_main_first(fetch, env)
        Path(folder, f"result{index}").write_text(str(result))
    except Exception as err:  # recorded for the test to read
        Path(folder, f"error{index}").write_text(str(err))
    finally:
        dist.destroy_process_group()


def test_the_backbone_is_fetched_by_one_process_per_node_first(tmp_path):
    from tests.fixtures.launchers import free_port

    ok, failing = tmp_path / "ok", tmp_path / "failing"
    for folder, fail in ((ok, False), (failing, True)):
        folder.mkdir()
        torch.multiprocessing.spawn(_local_main_first_worker, args=(free_port(), str(folder), fail), nprocs=2)
    assert float((ok / "end0").read_text()) <= float((ok / "start1").read_text())
    assert [(ok / f"result{i}").read_text() for i in (0, 1)] == ["0", "1"]
    assert (failing / "error0").read_text() == "offline: could not download the backbone"
    assert (failing / "error1").read_text() == "rank 0 refused to start: offline: could not download the backbone"
    assert not (failing / "start1").exists()


# ---------------------------------------------------------------- train.sh on a node shared with other jobs

def _train_sh(tmp_path, **environ):
    """train.sh's command line and the CUDA_VISIBLE_DEVICES it runs train.py with (a stand-in python prints them)."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"\necho "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "GPUS", "PORT")}
    proc = subprocess.run(["sh", str(ROOT / "train.sh")], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(env, PYTHON=str(fake), SAVE_PATH=str(tmp_path / "run"), **environ))
    return proc.returncode, proc.stdout, proc.stderr


def test_train_sh_keeps_the_schedulers_gpus_and_takes_a_free_port(tmp_path):
    code, out, _ = _train_sh(tmp_path, CUDA_VISIBLE_DEVICES="3,5")      # set by the scheduler: kept
    assert code == 0 and out.startswith("CUDA_VISIBLE_DEVICES=3,5\n")
    assert "--batch_size 66 --groups_per_process 3" in out and "--dist-url" not in out   # a free port, chosen later
    code, out, _ = _train_sh(tmp_path, CUDA_VISIBLE_DEVICES="3,5,7", GPUS="0,2")   # GPUS picks among them
    assert code == 0 and out.startswith("CUDA_VISIBLE_DEVICES=3,7\n") and "--groups_per_process 3" in out
    code, _, err = _train_sh(tmp_path, CUDA_VISIBLE_DEVICES="3,5", GPUS="2")
    assert code == 1 and "GPUS=2: position 2 is not among CUDA_VISIBLE_DEVICES=3,5" in err
    code, out, _ = _train_sh(tmp_path, GPUS="1,2", PORT="29517")
    assert code == 0 and out.startswith("CUDA_VISIBLE_DEVICES=1,2\n") and "--dist-url tcp://127.0.0.1:29517" in out
    code, _, err = _train_sh(tmp_path, CUDA_VISIBLE_DEVICES="")
    assert code == 1 and "no GPU found" in err
