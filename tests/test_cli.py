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
REQUIRED = {"isp": ["--dataset", "live", "--root", "data/live"],
            "prepare": ["--dataset", "live", "--root", "data/live", "--cache_dir", "cache"]}


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


# ---------------------------------------------------------------- issue 32, items 3 and 4: one command style


def test_every_command_is_a_module_with_add_arguments_and_run_or_delegated_with_a_parser():
    """A Command names a module holding add_arguments(parser) and run(args); a Delegated one names its main(argv)
    and the function building the parser it reads argv with. cli.py holds the registry and the dispatcher only."""
    import argparse
    import ast
    import importlib

    for name, command in COMMANDS.items():
        if isinstance(command, Delegated):
            assert command.parser, f"{name}: a delegated command names the parser it reads its options with"
            assert isinstance(command.build_parser(), argparse.ArgumentParser) and callable(command.main()), name
        else:
            module = importlib.import_module(command.module)
            assert callable(module.add_arguments) and callable(module.run), name
    tree = ast.parse((ROOT / "promptiqa" / "cli.py").read_text())
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert functions == {"_function", "build_parser", "command_parser", "_program_name", "main", "_check_numbers",
                         "_end", "run", "script"}
    assert len((ROOT / "promptiqa" / "cli.py").read_text().splitlines()) <= 450


def _python(*args, cwd):
    from promptiqa.resources import python_env

    out = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600,
                         env=python_env())
    return out.returncode, out.stdout, out.stderr


def test_the_second_spellings_are_aliases_of_the_registered_commands(tmp_path, capsys, monkeypatch):
    """`python -m promptiqa.data.check`, `.data.prepare` and `.demo` run the registered command: the same parser,
    output and exit code (here 0 with a JSON report, 1 with a user error's one line, 2 for a usage error); only the
    program's name differs. The data check's alias now reads a checkpoint's splits too, as `check` does."""
    from tests.helpers import _write_image

    for i in range(2):
        _write_image(tmp_path / f"i{i}.png", seed=i)
    (tmp_path / "labels.csv").write_text("image,score\ni0.png,1\ni1.png,2\n")
    cases = {"promptiqa.data.check": ("check", ["--dataset", "mine", "--root", tmp_path / "labels.csv", "--json"], 0),
             "promptiqa.data.prepare": ("prepare", ["--dataset", "mine", "--root", tmp_path / "none.csv",
                                                    "--cache_dir", tmp_path / "cache"], 1),
             "promptiqa.demo": ("demo", ["--sed", "3"], 2)}
    monkeypatch.chdir(tmp_path)

    def words(text, prog):   # the same text but for the program's name and where argparse wraps the usage line
        return text.replace(prog, "PROG").split()

    for alias, (name, argv, expected) in cases.items():
        code, out, err = _python("-m", alias, *argv, cwd=tmp_path)
        capsys.readouterr()
        assert code == expected == main([name, *map(str, argv)]), (alias, err)
        registered = capsys.readouterr()
        assert words(out, f"python -m {alias}") == words(registered.out, f"python -m promptiqa {name}"), alias
        assert words(err, f"python -m {alias}") == words(registered.err, f"python -m promptiqa {name}"), alias
        assert code == 0 or err.strip().splitlines()[-1].startswith(("error: ", f"python -m {alias}: error: "))
        assert main([name, "--help"], prog=f"python -m {alias}") == 0
        assert capsys.readouterr().out.startswith(f"usage: python -m {alias} ")
    torch = pytest.importorskip("torch")
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "official.pth.tar")
    code, _, err = _python("-m", "promptiqa.data.check", "--splits", tmp_path / "official.pth.tar", cwd=tmp_path)
    assert code == 1 and "the checkpoint records no splits" in err          # read by the model layer's reader
    assert not (tmp_path / "cache").exists()


def test_a_demo_config_error_is_one_line_through_the_command(tmp_path, capsys):
    """The demo refuses a setting of the wrong type (in its own section or its train.py section) as every config
    file is refused: one line naming it, exit 1, before any data is generated or model trained."""
    bad = tmp_path / "bad.yaml"
    for text, message in (("train: {lr: fast}", "demo config: train: lr: expected a number, got str 'fast'"),
                          ("baseline: maybe", f"{bad}: baseline: expected true or false, got str 'maybe'"),
                          ("unseen_requirements: [psnr2]", "demo config: unknown requirement 'psnr2'")):
        bad.write_text(text + f"\nsave_path: {tmp_path / 'run'}\ndata: {{out: {tmp_path / 'data'}}}\n")
        capsys.readouterr()
        assert main(["demo", "--config", str(bad)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize("full", [False, True])
def test_the_demo_trains_the_config_train_py_would_resolve_from_the_same_settings(full, tmp_path):
    """The demo's TrainConfig comes from the one merge (no YAML written and re-parsed as a command line): it is the
    configuration `train --config FILE` resolves from the same settings, field for field, types included."""
    import yaml

    from promptiqa.config import resolve_config
    from promptiqa.demo.run import DEFAULT_CONFIG, Demo, DemoConfig

    demo = Demo(DemoConfig.from_yaml(DEFAULT_CONFIG, full=full))
    for model in ("promptiqa", "promptiqa_wo_prompt"):
        cfg = demo.train_config(model)
        settings = tmp_path / f"{model}.yaml"
        settings.write_text(yaml.safe_dump(cfg.to_dict()))
        resolved = resolve_config(["--config", str(settings)]).to_dict()
        assert resolved.pop("config") == str(settings) and cfg.to_dict().pop("config") is None
        assert {k: (v, type(v)) for k, v in resolved.items()} == \
               {k: (v, type(v)) for k, v in cfg.to_dict().items() if k != "config"}


def test_ten_splits_and_ablation_follow_the_exit_code_rule(data, train_argv, tmp_path, capsys, monkeypatch):
    """0 when every seed is done or a seed's training stopped resumably (--stop_after_steps, a signal: the same
    command resumes it, as train.py exits 0 then), 1 for a request they refuse, 2 for a usage error (they exited 3
    for a stopped seed). A stopped variant ends the ablation there, without a summary."""
    root = tmp_path / "ten"
    argv = [a for a in train_argv(data, None, epochs=1, stop_after_steps=1)]
    assert main(["ten-splits", "--seeds", "2024", "--tests", "--save_path", str(root), *argv]) == 0
    assert "training stopped before the end; run the same command again to resume" in capsys.readouterr().out
    assert (root / "seed_2024" / "last.pth.tar").is_file() and not (root / "seed_2024" / "DONE.json").exists()
    from promptiqa.experiments import protocol

    seen = []

    def stopped(cfg, root, seeds, *args, **kwargs):   # what run_seeds returns when a seed's training stopped
        seen.append(root)
        return {int(seeds[0]): False}

    monkeypatch.setattr(protocol, "run_seeds", stopped)
    assert main(["ablation", "--variant", "wo_prompt", "wo_both", "--seeds", "2024", "--tests", "--save_path",
                 str(tmp_path / "abl"), *argv]) == 0
    assert seen == [tmp_path / "abl" / "wo_prompt"] and not (tmp_path / "abl" / "summary.csv").exists()
    assert main(["ten-splits", "--seeds", "2024", "--seed_index", "0", "--save_path", str(root), *argv]) == 1
    assert main(["ablation", "--save_path", str(tmp_path / "abl")]) == 1          # neither --variant nor --summarise
    assert main(["ten-splits", "--tests", "worst", "--save_path", str(root), *argv]) == 2
    assert main(["ablation", "--variant", "nope", *argv]) == 2
    err = capsys.readouterr().err
    assert "error: give --seeds or --seed_index, not both" in err and "invalid choice: 'worst'" in err
