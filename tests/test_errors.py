"""The one exit-code rule: user errors are one line and exit 1, usage errors 2, Ctrl-C 130, bugs keep a traceback."""
from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from promptiqa.errors import EXIT_ERROR, EXIT_INTERRUPTED, ConfigError, PromptIQAError, one_line, run_command
from tests.conftest import ROOT


def _raise(err):
    def main():
        raise err
    return main


def test_user_error_is_one_line_and_exit_1(capsys):
    assert run_command(_raise(ConfigError("--eval_every must be at least 1, got 0\ndetails"))) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err == "error: --eval_every must be at least 1, got 0 (--verbose for details)\n"


def test_os_error_names_reason_and_file(capsys):
    full = OSError(errno.ENOSPC, "No space left on device", "runs/x/last.pth.tar")
    assert run_command(_raise(full)) == EXIT_ERROR
    assert capsys.readouterr().err == "error: No space left on device: runs/x/last.pth.tar\n"
    assert one_line(FileNotFoundError("checkpoint not found: a.pth")) == "checkpoint not found: a.pth"


def test_exit_codes_of_success_usage_interrupt_and_bugs(capsys):
    assert run_command(lambda: None) == 0 and run_command(lambda: 3) == 3
    assert run_command(_raise(SystemExit(2))) == 2                     # argparse's usage errors pass through
    assert run_command(_raise(KeyboardInterrupt())) == EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError):                              # a bug is not dressed up as a user error
        run_command(_raise(ZeroDivisionError("bug")))


def test_every_error_class_shares_the_base():
    from promptiqa.data import DatasetError, SplitError
    from promptiqa.engine.trainer import TrainingError
    from promptiqa.experiments.protocol import ProtocolError
    from promptiqa.models import CheckpointError
    from promptiqa.models.promptiqa import BackboneWeightsError
    from promptiqa.predict import ImageError, PredictorError, PromptError

    for cls in (DatasetError, SplitError, TrainingError, ProtocolError, CheckpointError, BackboneWeightsError,
                ImageError, PredictorError, PromptError, ConfigError):
        assert issubclass(cls, PromptIQAError), cls


def test_train_py_bad_config_file_is_one_line_exit_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nnot_a_setting: 1\n")
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(bad)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {bad}: unknown settings ['not_a_setting']"]
