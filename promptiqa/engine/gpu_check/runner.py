"""Runs the GPU check's items, each in a process of its own bounded in time, and turns what they report into the
table.

An item (``Check``) is one function that fills one or more rows of the table. It runs in a child process forked from
a server that has imported torch once (multiprocessing's forkserver: a fresh interpreter, so no CUDA state is
inherited, and each item starts in a fraction of a second). The child leads a session of its own, so an item that
runs past its time limit is killed together with whatever it started (train.sh and its ranks), and the next item
starts on an idle device. An item that crashes, hangs or runs out of the command's time budget still has its rows
in the table, saying so; the rows the other items filled are kept.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ...fileio import atomic_write_text

PASS, INFO, WARN, NA, FAIL = "pass", "info", "warn", "n/a", "fail"
CRASH, TIMEOUT, SKIPPED, INTERRUPTED = "crash", "timeout", "skipped", "interrupted"
# the statuses that make the command exit non-zero: a check out of tolerance, or one that did not finish
FAILING = (FAIL, CRASH, TIMEOUT, SKIPPED, INTERRUPTED)
MIN_LIMIT_S = 5.0   # an item is not started with less than this left in the budget (or its own limit)


@dataclass
class Context:
    """What an item is told: where it runs and with which sizes, its own scratch folder, row 1's test vector (None
    when absent) and the checkout holding train.sh and train.py (None for an installed package)."""

    cpu: bool
    work: str
    reference: Optional[str] = None
    root: Optional[str] = None

    @property
    def device(self) -> str:
        return "cpu" if self.cpu else "cuda:0"


@dataclass
class RowResult:
    """One row's outcome: a status (PASS, INFO, WARN, NA, FAIL, ...), the text of the table's result cell and the
    raw figures for the JSON."""

    status: str
    result: str
    figures: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One item: ``run(context) -> {row id: RowResult}`` fills ``rows`` ((id, title) pairs) within ``limit_s``
    seconds on a GPU, ``cpu_limit_s`` with --cpu. ``cpu_limit_s`` None: the item needs CUDA and its rows are n/a
    with --cpu, for the reason ``cpu_note``."""

    name: str
    rows: Tuple[Tuple[str, str], ...]
    run: Callable[[Context], Dict[str, RowResult]]
    limit_s: float
    cpu_limit_s: Optional[float]
    cpu_note: str = ""


@dataclass
class Row:
    id: str
    title: str
    check: str
    status: str
    result: str
    figures: Dict[str, Any] = field(default_factory=dict)
    seconds: Optional[float] = None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _child(run: Callable[[Context], Any], context: Context, result_path: str, log_path: str) -> None:
    """The item's process: a session of its own (killed as a whole on time-out), its output in ``log_path``, what it
    returns (or the first line of its error) in ``result_path`` as JSON."""
    os.setsid()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.chdir(context.work)
    try:
        payload = {"value": run(context)}
    except BaseException as err:   # noqa: B902 - whatever stops the item is its row's message
        traceback.print_exc()
        payload = {"error": _first_line(err)}
    # a message to the parent, not a file anyone reads: Python's JSON, so a NaN figure survives the trip (fileio's
    # strict JSON would turn it into null)
    atomic_write_text(result_path, json.dumps(payload, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__")
                                              else str(o)))
    sys.stdout.flush()
    sys.stderr.flush()


def _kill_session(process) -> None:
    """SIGKILL every process of the session the item's ``process`` leads (the item and what it started), and the
    item itself should it not lead one yet; nothing if none is left."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if process.is_alive():
        process.kill()


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


class Runner:
    """Runs items one after another within a time budget (seconds for the whole command); each item's output goes to
    ``logs/NAME.log`` under ``out``."""

    def __init__(self, out: Path, budget_s: float, progress: Callable[[str], None] = lambda line: None):
        self.out, self.budget_s, self.progress = Path(out), budget_s, progress
        self.started = time.monotonic()
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._context = multiprocessing.get_context("forkserver")
        # the server imports torch (not CUDA) once; each item is then forked from it in a fraction of a second
        self._context.set_forkserver_preload(["torch", "timm", "promptiqa.engine.gpu_check.checks",
                                              "promptiqa.engine.benchmark"])

    def remaining(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def call(self, name: str, run: Callable[[Context], Any], context: Context, limit_s: float
             ) -> Tuple[str, Any, float]:
        """Run ``run(context)`` in a child for at most ``limit_s`` seconds (less when the budget has less left):
        (outcome, value or message, seconds). The outcome is "ok" (value: what it returned), CRASH or TIMEOUT
        (message: the error's first line, or what happened), SKIPPED (no time left) or INTERRUPTED (Ctrl-C)."""
        remaining = self.remaining()
        if remaining < min(limit_s, MIN_LIMIT_S):
            return SKIPPED, f"not run: the command's {self.budget_s:g} s budget was spent", 0.0
        limit = min(limit_s, remaining)
        log = self.logs / f"{name}.log"
        result = Path(context.work) / ".result.json"
        Path(context.work).mkdir(parents=True, exist_ok=True)
        if result.exists():
            result.unlink()
        process = self._context.Process(target=_child, args=(run, context, str(result), str(log)), name=name)
        start = time.monotonic()
        try:
            process.start()
        except Exception as err:   # e.g. the fork server could not start: this row says so, the others still try
            return CRASH, f"could not start: {_first_line(err)}", 0.0
        try:
            process.join(limit)
        except KeyboardInterrupt:
            _kill_session(process)
            process.join()
            return INTERRUPTED, "interrupted (Ctrl-C)", time.monotonic() - start
        seconds = time.monotonic() - start
        timed_out = process.is_alive()
        _kill_session(process)   # a time-out, or anything the item left running
        process.join()
        if timed_out:
            return TIMEOUT, f"timed out after {limit:.0f} s (log: logs/{log.name})", seconds
        if not result.exists():
            code = process.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            last = _last_line(log)
            return CRASH, f"crashed ({how}){': ' + last if last else ''}", seconds
        payload = json.loads(result.read_text(encoding="utf-8"))
        if "error" in payload:
            return CRASH, f"{payload['error']} (log: logs/{log.name})", seconds
        return "ok", payload["value"], seconds

    def run_check(self, check: Check, context: Context) -> List[Row]:
        """The rows of ``check``: what it reported, or its rows all marked with why it has no figures."""
        def rows(status: str, text: str, seconds: Optional[float] = None) -> List[Row]:
            return [Row(i, title, check.name, status, text, seconds=seconds) for i, title in check.rows]

        if context.cpu and check.cpu_limit_s is None:
            return rows(NA, check.cpu_note or "needs CUDA")
        self.progress(f"{check.name}: running (at most {check.cpu_limit_s if context.cpu else check.limit_s:.0f} s)")
        outcome, value, seconds = self.call(check.name, check.run, context,
                                            check.cpu_limit_s if context.cpu else check.limit_s)
        if outcome != "ok":
            filled = rows(outcome, value, seconds)
        else:
            filled = []
            for i, title in check.rows:
                got = value.get(i)
                if got is None:
                    filled.append(Row(i, title, check.name, CRASH, "the check returned no result for this row",
                                      seconds=seconds))
                else:
                    filled.append(Row(i, title, check.name, got["status"], got["result"], got.get("figures") or {},
                                      seconds))
        self.progress(f"{check.name}: " + ", ".join(f"{r.id} {r.status}" for r in filled) + f" ({seconds:.1f} s)")
        return filled


def run_checks(checks: Sequence[Check], context_for: Callable[[Check], Context], runner: Runner) -> List[Row]:
    """Every check's rows, in table order (row ids sorted as 1, 2a, 2b, ..., 10); a Ctrl-C stops the run, marking
    the checks not run as interrupted."""
    rows: List[Row] = []
    interrupted = False
    for check in checks:
        if interrupted:
            rows += [Row(i, t, check.name, INTERRUPTED, "not run (interrupted)") for i, t in check.rows]
            continue
        filled = runner.run_check(check, context_for(check))
        interrupted = any(r.status == INTERRUPTED for r in filled)
        rows += filled
    return sorted(rows, key=lambda r: row_order(r.id))


def row_order(row_id: str) -> Tuple[int, str]:
    digits = "".join(c for c in row_id if c.isdigit())
    return int(digits or 0), row_id[len(digits):]


def exit_code(rows: Sequence[Row]) -> int:
    """1 when a row failed or did not finish (FAILING), else 0."""
    return 1 if any(r.status in FAILING for r in rows) else 0


def _cell(text: str) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown(title: str, facts: Sequence[str], rows: Sequence[Row]) -> str:
    """The report: a title, the facts as a list, and one table with a row per check."""
    counts = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines = [f"## {title}", ""] + [f"- {fact}" for fact in facts]
    lines.append("- rows: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    lines += ["", "| # | check | status | result | s |", "|---|---|---|---|---:|"]
    for r in rows:
        seconds = "" if r.seconds is None else f"{r.seconds:.0f}"
        lines.append(f"| {r.id} | {_cell(r.title)} | {r.status} | {_cell(r.result)} | {seconds} |")
    return "\n".join(lines) + "\n"
