"""The GPU acceptance command (scripts/gpu_check.sh, promptiqa/engine/gpu_check): its --cpu run prints and writes
every row with none failing, and the runner turns a check that fails, crashes, hangs or gets no time into a row
that says so, with the right exit code."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promptiqa.engine.gpu_check import select
from promptiqa.engine.gpu_check.checks import CHECKS
from promptiqa.engine.gpu_check.runner import (CRASH, FAIL, FAILING, NA, PASS, SKIPPED, TIMEOUT, Check, Context, Row,
                                               RowResult, Runner, exit_code, markdown, row_order, run_checks)
from promptiqa.errors import ConfigError
from promptiqa.resources import REFERENCE_FIXTURES, python_env

ROOT = Path(__file__).resolve().parents[1]
ROWS = [row for check in CHECKS for row, _ in check.rows]


def _table(text: str) -> dict:
    """{row id: [check, status, result, seconds]} of the report's Markdown table."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| # "):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def test_cpu_run_prints_and_writes_every_row_and_none_fails(tmp_path):
    out = tmp_path / "report"
    started = time.monotonic()
    # under a minute on a quiet 2-core machine; the larger budget keeps a loaded CI machine from skipping checks
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu", "--out", str(out),
                           "--budget", "900"], env=python_env(PYTHON=sys.executable), capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = _table(proc.stdout)
    assert list(rows) == sorted(ROWS, key=row_order) == ["1", "2a", "2b", "2c", "2d", "3", "4", "5", "6", "7", "8"]
    assert not [(row, cells) for row, cells in rows.items() if cells[1] in FAILING]
    assert rows["1"][1] == PASS and rows["5"][1] == PASS and rows["7"][1] == PASS
    assert {rows[r][1] for r in ("2b", "2d", "4", "6")} == {NA}     # CUDA only
    assert proc.stdout.count("| # | check |") == 1                     # one table
    assert (out / "gpu_check.md").read_text() == proc.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["exit_code"] == 0 and [r["id"] for r in report["rows"]] == list(rows)
    assert report["rows"][1]["figures"]["images_per_s"] > 0           # 2a: the raw figures
    assert (out / "logs" / "resume.log").is_file() and not (out / "work").exists()
    print(f"--cpu run: {time.monotonic() - started:.0f} s")


# ---------------------------------------------------------------- the runner, with checks injected


def _passes(context):
    return {"a": RowResult(PASS, "fine", {"x": 1})}


def _fails(context):
    return {"a": RowResult(FAIL, "out of tolerance")}


def _raises(context):
    raise RuntimeError("boom\nsecond line")


def _dies(context):
    os._exit(3)


def _hangs(context):
    """Hangs, with a grandchild (as train.sh's ranks are) whose pid it leaves in its folder."""
    child = subprocess.Popen(["sleep", "600"])
    Path(context.work, "grandchild").write_text(str(child.pid))
    time.sleep(600)


def _fills_one_of_two(context):
    return {"a": RowResult(PASS, "fine")}


def _running(pid: int) -> bool:
    """True while process ``pid`` runs (a killed process nobody has reaped yet is a zombie: not running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _check(run, limit=30.0, rows=(("a", "injected"),), cpu_limit=30.0):
    return Check(run.__name__, rows, run, limit, cpu_limit, "needs CUDA")


def _run(tmp_path, checks, budget=120.0, cpu=True):
    runner = Runner(tmp_path / "out", budget)
    contexts = lambda check: Context(cpu=cpu, work=str(tmp_path / "work" / check.name))  # noqa: E731
    return run_checks(checks, contexts, runner)


def test_a_check_that_hangs_is_killed_with_what_it_started_and_marked_timed_out(tmp_path):
    started = time.monotonic()
    rows = _run(tmp_path, [_check(_hangs, limit=3, cpu_limit=3), _check(_passes)])
    assert time.monotonic() - started < 60
    assert [(r.check, r.status) for r in rows] == [("_hangs", TIMEOUT), ("_passes", PASS)]
    assert rows[0].result.startswith("timed out after 3 s") and exit_code(rows) == 1
    grandchild = int((tmp_path / "work" / "_hangs" / "grandchild").read_text())
    assert not _running(grandchild)   # killed with the check's session, not left running
    assert rows[1].figures == {"x": 1}


def test_crashes_failures_and_missing_rows_are_rows_that_say_so(tmp_path):
    rows = _run(tmp_path, [_check(_raises), _check(_dies), _check(_fails),
                           _check(_fills_one_of_two, rows=(("a", "one"), ("b", "two")))])
    status = {(r.check, r.id): (r.status, r.result) for r in rows}
    assert status[("_raises", "a")][0] == CRASH
    assert status[("_raises", "a")][1].startswith("RuntimeError: boom (log: logs/_raises.log)")
    assert "second line" in (tmp_path / "out" / "logs" / "_raises.log").read_text()   # the traceback is logged
    assert status[("_dies", "a")] == (CRASH, "crashed (exit code 3)")
    assert status[("_fails", "a")] == (FAIL, "out of tolerance")
    assert status[("_fills_one_of_two", "b")][0] == CRASH and status[("_fills_one_of_two", "a")][0] == PASS
    assert exit_code(rows) == 1
    assert exit_code([r for r in rows if r.status == PASS]) == 0


def test_cuda_only_checks_are_na_on_the_cpu_and_a_spent_budget_skips(tmp_path):
    rows = _run(tmp_path, [_check(_passes, cpu_limit=None)])
    assert [(r.status, r.result) for r in rows] == [(NA, "needs CUDA")] and exit_code(rows) == 0
    rows = _run(tmp_path, [_check(_passes)], budget=1.0)
    assert rows[0].status == SKIPPED and "budget" in rows[0].result and exit_code(rows) == 1


def test_the_table_sorts_rows_and_keeps_each_cell_on_one_line():
    rows = [Row(i, f"title {i}", "c", PASS, "a | b\nc") for i in ("10", "2b", "2a", "1")]
    text = markdown("GPU check", ["device: x"], sorted(rows, key=lambda r: row_order(r.id)))
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[1:]] == ["| 1", "| 2a", "| 2b", "| 10"]
    assert table[1].endswith("| pass | a \\| b c |  |")


def test_only_selects_checks_by_row_and_refuses_unknown_rows():
    assert [c.name for c in select(CHECKS, ["7"])] == ["train_compiled"]
    assert [c.name for c in select(CHECKS, ["1", "5"])] == ["fidelity", "resume"]
    with pytest.raises(ConfigError, match="--only 9"):
        select(CHECKS, ["9"])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_gpu_mode_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "promptiqa", "gpu-check", "--out", str(tmp_path)], cwd=ROOT,
                          env=python_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: no CUDA device here")
    assert list(tmp_path.iterdir()) == []


def test_row_1_reads_the_checkouts_vector_or_the_one_given(tmp_path):
    """--reference takes a test vector or a folder holding vector_public.npz; by default, the checkout's fixture. A
    path that is not a vector is one error before anything runs or is written."""
    from promptiqa.engine.gpu_check import find_vector, main
    from promptiqa.models.reference_weights import ReferenceError

    fixture = ROOT / REFERENCE_FIXTURES / "vector_public.npz"
    assert find_vector() == fixture
    assert find_vector(str(fixture.parent)) == find_vector(str(fixture)) == fixture
    with pytest.raises(ConfigError, match=f"--reference {tmp_path / 'none'}: no such file; expected a test vector"):
        main(["--cpu", "--out", str(tmp_path / "out"), "--reference", str(tmp_path / "none")])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ReferenceError, match=f"{tmp_path / 'bad.npz'}: cannot read the test vector"):
        main(["--cpu", "--out", str(tmp_path / "out"), "--reference", str(tmp_path / "bad.npz")])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_row_1_passes_with_the_reference_weights_on_the_cpu():
    """Row 1's GPU path (the official model, the reference weights, the vector), run on the CPU."""
    import torch

    from promptiqa.engine.gpu_check.checks import _reference_vector

    result = _reference_vector(ROOT / REFERENCE_FIXTURES / "vector_public.npz", torch.device("cpu"))
    assert result.status == PASS and max(result.figures["max_abs_error"].values()) <= 1e-5, result.result
    assert result.result.startswith("official model, reference weights, on cpu: max |Δ| ")


def test_the_resume_comparison_sees_any_changed_weight_or_counter(tmp_path):
    import torch

    from promptiqa.engine.gpu_check.resume_drill import _error_line, _max_weight_difference

    state = {"w": torch.zeros(3, 2), "bn.num_batches_tracked": torch.tensor(4)}
    same, moved, counted = (tmp_path / f"{name}.pth.tar" for name in ("same", "moved", "counted"))
    torch.save({"state_dict": state}, same)
    torch.save({"state_dict": {**state, "w": state["w"].clone().index_fill_(0, torch.tensor([1]), 2 ** -30)}}, moved)
    torch.save({"state_dict": {**state, "bn.num_batches_tracked": torch.tensor(5)}}, counted)
    assert _max_weight_difference(same, same) == (0.0, 6, [])
    assert _max_weight_difference(same, moved) == (2 ** -30, 6, [])
    assert _max_weight_difference(same, counted) == (0.0, 6, ["bn.num_batches_tracked"])
    # a failed training run is reported by its error line, not by the last line it printed
    assert _error_line("Traceback\n  File x\nRuntimeError: no deterministic kernel\n\n[W] shutting down\n") == \
        "RuntimeError: no deterministic kernel"
