"""The pages (README.md, CONTRIBUTING.md, docs/*.md): every relative link and anchor resolves, every command line of
their fenced blocks parses with its command's own parser, nothing points outside the repository; docs/datasets.md's
tables state what the registry and the split rule do; the layout's import rules hold."""
from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
import sys
from pathlib import Path

import pytest

from promptiqa.data.registry import DATASET_SPECS
from promptiqa.data.splits import split_units
from tests.helpers import _mapping, _table

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "datasets.md"
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCES = ("", "bash", "sh", "shell", "console")   # the fenced blocks whose lines are commands


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_cited_section_exists():
    text = DOC.read_text(encoding="utf-8")
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    cited = {anchor: "docs/datasets.md" for anchor in re.findall(r"\]\(#([\w\-]+)\)", text)}
    for path in [*ROOT.glob("promptiqa/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("scripts/*.py"),
                 ROOT / "README.md"]:
        for anchor in re.findall(r"datasets\.md#([\w\-]+)", path.read_text(encoding="utf-8")):
            cited.setdefault(anchor, str(path.relative_to(ROOT)))
    assert len(cited) >= 15
    assert {anchor: where for anchor, where in cited.items() if anchor not in anchors} == {}


def test_counts_and_split_sizes_are_the_registry_and_the_split_rule():
    table = _table(DOC.read_text(encoding="utf-8"), "key | images")
    assert list(table) == list(DATASET_SPECS)
    for key, (images, unit, train, test) in table.items():
        spec = DATASET_SPECS[key]
        assert int(images) == spec.images, key
        units = spec.references if spec.split_by == "reference" else spec.images
        assert unit == (f"{spec.references} references" if spec.split_by == "reference" else "image"), key
        cut = split_units([str(i) for i in range(units)], 2024)
        assert (int(train), int(test)) == (len(cut[0]), len(cut[1])), key


def test_label_mappings_and_polarities_are_the_registry():
    table = _table(DOC.read_text(encoding="utf-8"), "key | raw score")
    assert list(table) == list(DATASET_SPECS)
    for key, (raw, polarity, mapping, *_) in table.items():
        spec = DATASET_SPECS[key]
        assert _mapping(mapping.replace(" (sic)", "")) == (spec.offset, spec.divisor), key
        assert (polarity != "lower is better") == spec.higher_is_better, key


def _order_kind(spec) -> str:
    if spec.train_order == "label_file":
        return "label file"
    return "references" if spec.split_by == "reference" else "shuffled units"


def test_the_sample_order_table_is_the_registry():
    table = _table(DOC.read_text(encoding="utf-8"), "kind")
    for kind in ("label file", "shuffled units", "references"):
        listed = {key for key in re.split(r"[,\s(]+", table[kind][1]) if key in DATASET_SPECS}
        assert listed == {key for key, spec in DATASET_SPECS.items() if _order_kind(spec) == kind}, kind


LAYERS = ("data", "models", "engine", "evaluation", "experiments")   # docs/architecture.md "Layout": bottom-up
TOOLS = ("cli", "commands", "predict", "prompt_files", "app", "demo")   # on top: only they may import anything


def _is_main_block(node) -> bool:
    """``if __name__ == "__main__":``: a module's program, not its code (an alias hands its command line to the
    registry there: docs/architecture.md)."""
    import ast

    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and getattr(test.left, "id", "") == "__name__"
            and [getattr(c, "value", None) for c in test.comparators] == ["__main__"])


def _promptiqa_imports(path: Path, package: tuple):
    """(line, module under promptiqa) of every import in ``path`` (lazy ones inside functions too; not those of its
    ``if __name__ == "__main__":`` block)."""
    import ast

    tree = ast.parse(path.read_text())
    tree.body = [node for node in tree.body if not _is_main_block(node)]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package)[:len(package) - (node.level - 1)]
            yield node.lineno, ".".join(base + ([node.module] if node.module else []))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("promptiqa."):
            yield node.lineno, node.module[len("promptiqa."):]
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name[len("promptiqa."):]) for a in node.names if a.name.startswith("promptiqa."))


def test_nothing_imports_upwards():
    """docs/architecture.md's import rules: data and models know nothing of training, and no layer imports one above it or a
    tool on top (a lazy import inside a function counts too)."""
    upward = []
    for path in sorted((ROOT / "promptiqa").rglob("*.py")):
        parts = path.relative_to(ROOT / "promptiqa").parts
        if parts[0] not in LAYERS:
            continue
        for line, module in _promptiqa_imports(path, parts[:-1]):
            top = module.split(".")[0]
            if top in TOOLS or (top in LAYERS and LAYERS.index(top) > LAYERS.index(parts[0])):
                upward.append(f"promptiqa/{'/'.join(parts)}:{line} imports {module}")
    assert upward == []


def _test_file_imports(folder: Path) -> list:
    """'FILE:LINE imports MODULE' for each import of a test module (tests.test_*, a relative .test_*, a bare test_*)
    in the test files of ``folder``."""
    found = []
    for path in sorted(folder.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(filter(None, ["tests" if node.level else "", node.module or ""]))
                modules = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0].startswith("test_") or (parts[0] == "tests" and parts[1:2] and
                                                   parts[1].startswith("test_")):
                    found.append(f"{path.name}:{node.lineno} imports {module}")
                    break
    return found


def test_no_test_file_imports_another(tmp_path):
    """Helpers the test files share live in tests/helpers.py and tests/conftest.py (fixtures): a test file imports no
    other test file (importing one would collect its tests and fixtures a second time)."""
    assert _test_file_imports(ROOT / "tests") == []
    (tmp_path / "test_a.py").write_text("from tests.test_predict import f\nfrom . import test_app\n"
                                        "import tests.test_cli\nfrom tests.helpers import g\n")
    assert _test_file_imports(tmp_path) == ["test_a.py:1 imports tests.test_predict",
                                            "test_a.py:2 imports tests.test_app", "test_a.py:3 imports tests.test_cli"]


def test_the_install_table_names_the_extra_of_every_command():
    """README "Install": each command is in the row of the extra the registry checks for it (the core for none)."""
    from promptiqa.cli import COMMANDS

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = {}
    for install, (_, commands) in _table(text, "install").items():
        extra = re.search(r'\[(\w+)\]|$', install).group(1)
        listed.update({name: extra for name in re.findall(r"`promptiqa ([\w-]+)`", commands)})
    assert listed == {name: command.extra for name, command in COMMANDS.items()}


# --------------------------------------------------------------------------------------------------------------
# the pages: links, anchors and command lines


def _prose_and_blocks(page: Path):
    """(prose lines, [(fence language, [lines])]) of a Markdown page: code blocks apart from the text around them."""
    prose, blocks, block = [], [], None
    for line in page.read_text(encoding="utf-8").splitlines():
        fence = re.match(r"\s*```(\w*)", line)
        if fence and block is None:
            block = (fence.group(1), [])
        elif fence:
            blocks.append(block)
            block = None
        elif block is not None:
            block[1].append(line)
        else:
            prose.append(line)
    assert block is None, f"{page}: a code block is not closed"
    return prose, blocks


def _anchors(page: Path) -> set:
    """The anchors GitHub gives the page's headings (a repeated heading gets -1, -2, ...)."""
    seen, anchors = {}, set()
    for line in _prose_and_blocks(page)[0]:
        heading = re.match(r"#{1,6} (.+)$", line)
        if heading:
            anchor = _anchor(heading.group(1).replace("`", ""))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def _links(page: Path):
    """Every link and image target of the page's text (code blocks and `code spans` left out)."""
    text = re.sub(r"`[^`]*`", "", "\n".join(_prose_and_blocks(page)[0]))
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text)


def test_the_pages_exist_and_the_readme_is_a_front_page():
    names = {str(page.relative_to(ROOT)) for page in PAGES}
    assert {"README.md", "CONTRIBUTING.md"} | {f"docs/{name}.md" for name in (
        "scoring", "app", "training", "reproducing", "datasets", "demo", "errors", "architecture")} <= names
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250
    readme_links = {link.partition("#")[0] for link in _links(ROOT / "README.md")}
    assert {str(page.relative_to(ROOT)) for page in PAGES[1:]} <= readme_links   # the README indexes every page


def _broken_links(pages, root: Path = ROOT) -> list:
    """What is wrong with the pages' links: outside targets, missing files, anchors no heading has."""
    broken = []
    for page in pages:
        for link in _links(page):
            if re.match(r"[a-z]+:", link):   # http:, https:, mailto: ...: the pages point at nothing outside
                broken.append(f"{page.name}: {link} points outside the repository")
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if root not in target.parents and target != root:
                broken.append(f"{page.name}: {link} leaves the repository")
            elif not target.exists():
                broken.append(f"{page.name}: {link}: no such file")
            elif anchor and (target.suffix != ".md" or anchor not in _anchors(target)):
                broken.append(f"{page.name}: {link}: no heading with that anchor")
    return broken


def test_every_link_and_anchor_resolves_inside_the_repository():
    assert all(_links(page) for page in PAGES)
    assert _broken_links(PAGES) == []


def test_link_checking_catches_a_broken_link_and_anchor(tmp_path):
    """The check above can fail: a missing file, a missing anchor and an outside link are each reported."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[a](#title) [b](#nope) [c](missing.md) [d](https://example.org)\n```bash\n# not a "
                    "heading\n```\n`[e](#in-code)`\n", encoding="utf-8")
    (tmp_path / "inside").mkdir()
    (tmp_path / "inside" / "other.md").write_text("## Other `part`\n\n[up](../page.md#title) [out](../../x.md)\n")
    assert _anchors(page) == {"title"} and _links(page) == ["#title", "#nope", "missing.md", "https://example.org"]
    assert _anchors(tmp_path / "inside" / "other.md") == {"other-part"}
    assert _broken_links([page, tmp_path / "inside" / "other.md"], tmp_path) == [
        "page.md: #nope: no heading with that anchor", "page.md: missing.md: no such file",
        "page.md: https://example.org points outside the repository", "other.md: ../../x.md leaves the repository"]


def _command_lines(page: Path):
    """The shell lines of the page's command blocks, continuation lines joined, prompts and comments kept."""
    for language, lines in _prose_and_blocks(page)[1]:
        if language not in FENCES:
            continue
        joined = ""
        for line in lines:
            joined += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
            if not line.rstrip().endswith("\\"):
                yield re.sub(r"^\s*\$ ", "", joined)
                joined = ""


def _script_parser(path: Path, argv):
    """(command, argv) of ``python scripts/X.py ARGS``: a shim's registered command, else the script's own parser."""
    text = path.read_text(encoding="utf-8")
    shim = re.search(r'script\("([\w-]+)"\)', text)
    if shim:
        return shim.group(1), argv
    words = re.search(r"COMMANDS = (\{.*?\})", text)   # relabel_fr.py: its first word names the command
    if words:
        import ast

        return ast.literal_eval(words.group(1))[argv[0]], argv[1:]
    sys.path.insert(0, str(path.parent))    # a stand-alone script: its siblings import each other
    try:
        spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module.build_parser(), argv


def _module_parser(module: str, argv):
    """(command, argv) of ``python -m MODULE ARGS``: the registry, an alias of a registered command, or the module's
    own parser."""
    if module == "promptiqa":
        return argv[0], argv[1:]
    spec = importlib.util.find_spec(module)
    main = Path(spec.origin).with_name("__main__.py") if spec.submodule_search_locations else None
    if main is not None:       # a package run with -m: its __main__ forwards to a registered command
        return re.search(r'main\(\["([\w-]+)"', main.read_text()).group(1), argv
    return importlib.import_module(module).build_parser(), argv


def _strict(parser):
    """``parser`` refusing abbreviations: a documented line spells every option in full."""
    parser.allow_abbrev = False
    return parser


def _parse(tokens):
    """The command a documented line runs, parsed with its own parser; None when the line runs none of ours.
    Raises SystemExit (with argparse's message on standard error) when its options are not the command's."""
    from promptiqa.cli import COMMANDS, command_parser

    while tokens and re.match(r"\w+=", tokens[0]):    # VAR=value before the command
        tokens = tokens[1:]
    if not tokens:
        return None
    if tokens[0] == "promptiqa":
        parser, argv = tokens[1], tokens[2:]
    else:
        for i, token in enumerate(tokens):
            before = tokens[i - 1] if i else ""
            if Path(token).name in ("train.py", "test.py") or (token == "train.sh" and before in ("sh", "bash")):
                parser, argv = "test" if token == "test.py" else "train", tokens[i + 1:]
                break
            if Path(before).name.startswith("python") and token.startswith("scripts/") and token.endswith(".py"):
                parser, argv = _script_parser(ROOT / token, tokens[i + 1:])
                break
            if (Path(token).name.startswith("python") and tokens[i + 1:i + 2] == ["-m"]
                    and re.match(r"promptiqa(\.|$)", tokens[i + 2] if len(tokens) > i + 2 else "")):
                parser, argv = _module_parser(tokens[i + 2], tokens[i + 3:])
                break
        else:
            return None
    # $VAR standing for options (srun ... $RESUME) is left out; one that is an option's value stays a value
    argv = [a for j, a in enumerate(argv) if not (a.startswith("$") and (j == 0 or not argv[j - 1].startswith("-")))]
    if isinstance(parser, str):     # a registered command; one with rest_to hands what it leaves to another's parser
        name, parser = parser, _strict(command_parser(parser))
        if getattr(COMMANDS[name], "rest_to", None):
            _, argv = parser.parse_known_args(argv)
            parser = _strict(command_parser(COMMANDS[name].rest_to))
    return _strict(parser).parse_args(argv)


def _check(line: str):
    """None when ``line`` runs none of our commands, else '' (it parses) or why it does not."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as err:
        return f"not a shell line ({err})"
    segments = [[]]                               # each command of a pipeline or list
    for token in tokens:
        segments.append([]) if token in ("|", "||", "&&", ";") else segments[-1].append(token)
    results = [_check_command(segment) for segment in segments]
    return next((r for r in results if r), None if all(r is None for r in results) else "")


def _check_command(tokens):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return None if _parse(tokens) is None else ""
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "exited"
    except (KeyError, IndexError, AttributeError, FileNotFoundError) as e:
        return f"no such command ({type(e).__name__}: {e})"


def test_every_documented_command_line_parses_with_its_own_parser():
    checked, failed = 0, []
    for page in PAGES:
        for line in _command_lines(page):
            why = _check(line)
            checked += why is not None
            if why:
                failed.append(f"{page.relative_to(ROOT)}: {line.strip()}: {why}")
    assert failed == []
    assert checked >= 15


@pytest.mark.parametrize("line, why", [
    ("promptiqa score --checkpoint C --prompt p.csv --no_such_option 1 photos/", "unrecognized arguments"),
    ("promptiqa score --checkpoint C --prompt p.csv --score_ photos/", "unrecognized arguments"),
    ("promptiqa no-such-command --x 1", "no such command"),
    ("python train.py --config configs/paper.yaml --epoch 5", "unrecognized arguments"),
    ("GPUS=0,1 SAVE_PATH=runs/x sh train.sh --no_such_option", "unrecognized arguments"),
    ("srun --ntasks 2 python test.py --checkpoint C --dataset live --isp_strategy best", "invalid choice"),
    ("python -m promptiqa isp --dataset live --root r --isp_num x", "invalid int value"),
    ("python -m promptiqa.data.check --dataset live --root r --no-image", "unrecognized arguments"),
    ("python -m promptiqa.demo --sed 3", "unrecognized arguments"),
    ("python scripts/ten_splits.py --config configs/paper.yaml --seeds 2024 --no_such 1", "unrecognized arguments"),
    ("python scripts/relabel_fr.py table3 --checkpoint C --labels dir", "unrecognized arguments"),
    ("python scripts/ablation.py --variant all --no_such 1", "unrecognized arguments"),
    ("python scripts/benchmark_score.py --preset tiny --amp fp16", "fp16 is not offered"),
    ("python scripts/no_such_script.py --x", "no such command"),
    ("cd runs && promptiqa score --checkpoint C --prompt p.csv --quiet --no_such photos/", "unrecognized arguments"),
    ('A=$(hostname | head -n 1) srun python train.py --epochs 1 --no_such 2', "unrecognized arguments"),
])
def test_a_wrong_command_line_fails_the_check(line, why):
    assert why in _check(line)


@pytest.mark.parametrize("line", [
    "promptiqa score --checkpoint hf:Zevin2023/PromptIQA --prompt prompt.csv --score_range 1 5 photos/  # a comment",
    "python -m promptiqa.data.check --dataset live --root data/live --no-images --json",
    "python -m promptiqa.demo --seed 2025 --no_baseline",
    "python scripts/ten_splits.py --config configs/paper.yaml --seed_index 3 --epochs 2",
    "python scripts/relabel_fr.py table3 --checkpoint C --labels_dir data/relabelled --seed 2024",
    "python scripts/benchmark_data.py --images DIR --min_speedup 5",
    "srun --kill-on-bad-exit=1 python train.py --config configs/paper.yaml --save_path runs/paper $RESUME",
])
def test_a_right_command_line_passes_the_check(line):
    assert _check(line) == ""
