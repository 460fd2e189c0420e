"""The command registry (promptiqa/cli.py): every command is reachable as ``python -m promptiqa COMMAND``, its
``--help`` documents its options from any folder, and the scripts are shims over the same registry."""
import subprocess
import sys
from pathlib import Path

import pytest

from promptiqa import cli
from promptiqa.cli import COMMANDS, EXTRA_MODULES, Delegated, main

ROOT = Path(__file__).resolve().parents[1]
# the commands the README and the issue name, each with an option its --help must document
EXPECTED = {"train": "--batch_size", "test": "--checkpoint", "score": "--prompt", "isp": "--isp_num",
            "check": "--no-images", "prepare": "--dataset", "demo": "--full", "ten-splits": "--seed_index",
            "ablation": "--variant", "relabel": "--out_dir", "relabel-eval": "--baseline",
            "isp-experiments": "selection", "summarise": "--out", "benchmark": "--group_size",
            "gpu-check": "--cpu"}
# arguments a command parses before its extra is checked (delegated commands are checked before their parser runs)
REQUIRED = {"isp": ["--dataset", "live", "--root", "data/live"]}


def test_top_level_help_lists_every_command_with_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert f"    {name}" in out and command.help.split()[0] in out
    assert set(EXPECTED) <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_command_documents_its_options_from_an_empty_folder(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert EXPECTED[name] in out
    if isinstance(COMMANDS[name], Delegated) and name != "demo" and name != "check":
        # the usage names the command as it was typed (check and demo keep their module's name)
        assert f"python -m promptiqa {name}" in out
    assert list(tmp_path.iterdir()) == []   # --help writes nothing


def test_usage_errors_exit_2_and_user_errors_exit_1(tmp_path, capsys):
    assert main(["no-such-command"]) == 2
    assert main(["train", "--no_such_option"]) == 2
    assert main(["summarise", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and "missing" in err


def test_scripts_are_shims_over_the_registry(tmp_path):
    """Each script runs its registered command under its own name (no sys.path manipulation: the package is
    installed); relabel_fr.py maps its two words to two commands."""
    for script, word in (("scripts/relabel_fr.py", "table3"), ("test.py", None)):
        cmd = [sys.executable, str(ROOT / script), *([word] if word else []), "--help"]
        out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        assert f"usage: {Path(script).name}" in out.stdout and "--checkpoint" in out.stdout
    out = subprocess.run([sys.executable, str(ROOT / "scripts/relabel_fr.py"), "nope"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 2 and "relabel-eval" in out.stderr
    for path in [*ROOT.glob("scripts/*.py"), ROOT / "train.py", ROOT / "test.py", *ROOT.glob("promptiqa/**/*.py")]:
        assert "sys.path.insert" not in path.read_text() and "sys.path.append" not in path.read_text(), path


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_command_whose_extra_is_missing_stops_with_one_line(name, tmp_path, monkeypatch, capsys):
    """Only scoring runs on the core install; every other command names its extra (as tests/test_install.py shows
    in a real core install for demo, test and app), before creating anything, and its --help still works."""
    extra = COMMANDS[name].extra
    if name == "score":
        assert extra is None
        return
    assert extra in EXTRA_MODULES, f"{name} declares no extra"
    hidden = EXTRA_MODULES[extra][-1]
    monkeypatch.setattr(cli, "_installed", lambda module: module != hidden)
    monkeypatch.chdir(tmp_path)
    assert main([name, *REQUIRED.get(name, [])]) == 1
    assert capsys.readouterr().err == (f"error: python -m promptiqa {name} needs the {extra} extra ({hidden} not "
                                       f'installed): pip install "promptiqa[{extra}]"\n')
    assert list(tmp_path.iterdir()) == []
    assert main([name, "--help"]) == 0 and capsys.readouterr().out.startswith("usage:")
