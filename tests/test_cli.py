"""The command registry (promptiqa/cli.py): every command is reachable as ``python -m promptiqa COMMAND``, its
``--help`` documents its options from any folder, and the scripts are shims over the same registry."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from promptiqa import cli, extras
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
    # the usage names the command as it was typed
    assert f"usage: python -m promptiqa {name}" in out
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
        assert f"usage: python {Path(script).name}" in out.stdout and "--checkpoint" in out.stdout
    out = subprocess.run([sys.executable, str(ROOT / "scripts/relabel_fr.py"), "nope"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 2 and "relabel-eval" in out.stderr


ENTRY_SCRIPTS = sorted([*ROOT.glob("scripts/*.py"), ROOT / "train.py", ROOT / "test.py"])
# Runs each script given on its command line as `python SCRIPT --help` does, in this one process, without the
# script's folder on sys.path (python -P leaves out the folder of -c too); prints {script: [exit code, output]}.
_RUN_EACH_WITHOUT_ITS_FOLDER = """
import contextlib, io, json, runpy, sys
results = {}
for path in sys.argv[1:]:
    sys.argv, out = [path, "--help"], io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            runpy.run_path(path, run_name="__main__")   # unlike `python SCRIPT`, adds no folder to sys.path
            code = 0
        except SystemExit as stop:
            code = stop.code or 0
        except Exception as error:                      # ModuleNotFoundError: a sibling of the script
            code = f"{type(error).__name__}: {error}"
    results[path] = [code, out.getvalue()]
print(json.dumps(results))
"""


def _path_changes(tree: ast.AST) -> list:
    """Lines that change sys.path: sys.path.insert/append/extend(...), sys.path = / += / [...] = ..."""
    def is_sys_path(node):
        return isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys"

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_path(node.func.value):
            lines += [node.lineno] if node.func.attr in ("insert", "append", "extend") else []
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            lines += [node.lineno for t in targets if is_sys_path(t) or is_sys_path(getattr(t, "value", None))]
    return sorted(lines)


def test_entry_scripts_run_without_their_folder_on_the_path(tmp_path):
    """`python scripts/X.py` puts scripts/ first on sys.path, so a script importing its sibling (benchmark_score.py
    imported benchmark_data) runs from the checkout only: every entry script runs here with --help without its folder
    on sys.path, imports no module beside it (the package itself excepted: it is installed), and nothing changes
    sys.path (the scripts and the package)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}   # the package, as installed; not scripts/
    proc = subprocess.run([sys.executable, "-P", "-c", _RUN_EACH_WITHOUT_ITS_FOLDER, *map(str, ENTRY_SCRIPTS)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.splitlines()[-1])
    assert len(results) == len(ENTRY_SCRIPTS) >= 10
    for script, (code, out) in results.items():
        # relabel_fr.py names its two words, a usage error like argparse's; every other script prints its usage
        assert (code, "usage:" in out) == ((2, True) if script.endswith("relabel_fr.py") else (0, True)), \
            (script, code, out[-500:])
    beside = []
    for script in ENTRY_SCRIPTS:
        siblings = ({p.stem for p in script.parent.glob("*.py")}
                    | {p.name for p in script.parent.iterdir() if (p / "__init__.py").is_file()}) - {"promptiqa"}
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["."] if node.level else [node.module]   # a relative import: its own folder
            else:
                continue
            beside += [f"{script.name}:{node.lineno} {n}" for n in names if n == "." or n.split(".")[0] in siblings]
    assert beside == []
    changes = [f"{path.relative_to(ROOT)}:{line}" for path in [*ENTRY_SCRIPTS, *ROOT.glob("promptiqa/**/*.py")]
               for line in _path_changes(ast.parse(path.read_text()))]
    assert changes == []
    assert _path_changes(ast.parse("import sys\nsys.path.insert(0, 'x')\nsys.path[:0] = ['y']\n")) == [2, 3]


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
    monkeypatch.setattr(extras, "_installed", lambda module: module != hidden)
    monkeypatch.chdir(tmp_path)
    assert main([name, *REQUIRED.get(name, [])]) == 1
    assert capsys.readouterr().err == (f"error: python -m promptiqa {name} needs the {extra} extra ({hidden} not "
                                       f'installed): pip install "promptiqa[{extra}]"\n')
    assert list(tmp_path.iterdir()) == []
    assert main([name, "--help"]) == 0 and capsys.readouterr().out.startswith("usage:")


# what pip writes as the `promptiqa` console command ([project.scripts] promptiqa = "promptiqa.cli:main")
CONSOLE_SCRIPT = "import sys\nfrom promptiqa.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n"


def test_usage_lines_and_suggested_commands_name_the_command_as_it_was_started(tmp_path):
    """`promptiqa train --help` says `usage: promptiqa train`, `python train.py --help` says `usage: python train.py`,
    and a message suggesting a command spells it the same way (`promptiqa check`, not `python -m promptiqa...`)."""
    from promptiqa.resources import python_env

    console = tmp_path / "bin" / "promptiqa"
    console.parent.mkdir()
    console.write_text(CONSOLE_SCRIPT)
    labels = tmp_path / "labels.csv"
    labels.write_text("image,score\nmissing.jpg,1\nmissing2.jpg,2\n")

    def run(*cmd, cwd=tmp_path):
        return subprocess.run([sys.executable, *map(str, cmd)], cwd=cwd, capture_output=True, text=True,
                              timeout=600, env=python_env())

    for name in ("train", "test", "score", "check", "summarise"):
        out = run(console, name, "--help")
        assert out.returncode == 0 and out.stdout.startswith(f"usage: promptiqa {name} "), out.stdout[:200]
    assert run(console, "--help").stdout.startswith("usage: promptiqa ")
    out = run(console, "train", "--dataset", "mine", "--data_root", f"mine={labels}", "--save_path", tmp_path / "run")
    assert out.returncode == 1 and "promptiqa check lists them all" in out.stderr and "python -m" not in out.stderr
    out = run("-m", "promptiqa", "train", "--dataset", "mine", "--data_root", f"mine={labels}")
    assert out.returncode == 1 and "python -m promptiqa check lists them all" in out.stderr
    assert run("train.py", "--help", cwd=ROOT).stdout.startswith("usage: python train.py ")
    assert run("-m", "promptiqa", "train", "--help").stdout.startswith("usage: python -m promptiqa train ")


def test_no_parser_takes_an_abbreviated_option(tmp_path, capsys):
    """argparse's allow_abbrev read `--log_ev 5` as --log_every and `--sav x` as --save_path: every parser of the
    package and the scripts refuses a prefix (a usage error, exit 2), so an option is only ever what was typed."""
    import ast

    from promptiqa.cli import main

    unguarded = []
    for path in sorted([*(ROOT / "promptiqa").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "ArgumentParser", "add_parser"):
                if not any(k.arg == "allow_abbrev" and getattr(k.value, "value", None) is False for k in node.keywords):
                    unguarded.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert unguarded == []
    for argv in (["train", "--log_ev", "5", "--save_path", str(tmp_path / "run")],
                 ["test", "--checkpoint", "c.pth.tar", "--sav", str(tmp_path / "out")],
                 ["score", "--checkpoint", "c.pth.tar", "--prompt", "p.csv", "--work", "2", "x.png"]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert "unrecognized arguments" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_device_and_amp_are_declared_once_and_read_alike_everywhere(tmp_path, capsys, monkeypatch):
    """--device was declared in 6 parsers and --amp in 4 with 4 sets of values (score refused `--amp none`, benchmark
    defaulted to bf16): one declaration each (config.OPTIONS), the same values and defaults in every command."""
    import ast

    from promptiqa.engine import benchmark
    from tests.helpers import _micro_checkpoint, _write_image

    declared = []
    for path in sorted((ROOT / "promptiqa").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and any(
                    getattr(a, "value", None) in ("--device", "--amp") for a in node.args):
                declared.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert declared == []                                   # config.OPTIONS declares them (through _opt)
    ckpt = _micro_checkpoint(tmp_path / "micro.pth.tar")
    images = [_write_image(tmp_path / f"p{i}.png", seed=i) for i in range(3)]
    (tmp_path / "prompt.csv").write_text("image,score\n" + "".join(f"{p.name},{i}\n" for i, p in enumerate(images)))
    score = ["score", "--checkpoint", str(ckpt), "--prompt", str(tmp_path / "prompt.csv"), "--device", "cpu",
             "--quiet", str(images[0])]
    capsys.readouterr()
    assert main([*score, "--amp", "none"]) == 0             # float32, as train.py and test.py read it
    none = capsys.readouterr().out
    assert main(score) == 0 and capsys.readouterr().out == none
    assert main([*score, "--amp", "fp16"]) == 2 and "overflow" in capsys.readouterr().err   # refused, with why
    seen = {}

    def record(*args, **kwargs):   # the configuration benchmark would measure, without measuring it
        seen["amp"] = args[4]
        raise SystemExit(0)

    monkeypatch.setattr(benchmark, "benchmark_config", record)
    with pytest.raises(SystemExit):
        benchmark.main(["--preset", "micro"])
    assert seen["amp"] == "none"                            # benchmark's default is every command's: float32
