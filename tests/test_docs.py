"""docs/datasets.md: every section the code cites exists, and its tables state what the registry and the split rule do."""
from __future__ import annotations

import re
from pathlib import Path

from promptiqa.data.registry import DATASET_SPECS
from promptiqa.data.splits import split_units

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "datasets.md"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _table(text: str, first_column: str) -> dict:
    """{first cell: [cells]} of the Markdown table whose header starts with ``| first_column |``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


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
    table = _table(DOC.read_text(encoding="utf-8"), "key")
    assert list(table) == list(DATASET_SPECS)
    for key, (images, unit, train, test) in table.items():
        spec = DATASET_SPECS[key]
        assert int(images) == spec.images, key
        units = spec.references if spec.split_by == "reference" else spec.images
        assert unit == (f"{spec.references} references" if spec.split_by == "reference" else "image"), key
        cut = split_units([str(i) for i in range(units)], 2024)
        assert (int(train), int(test)) == (len(cut[0]), len(cut[1])), key


def _mapping(text: str):
    """(offset, divisor) of a mapping written as 'x', 'x / d' or '(x − o) / d' (anything after it ignored)."""
    match = re.match(r"\(x − ([\d.]+)\) / ([\d.]+)|x / ([\d.]+)|x$", text)
    assert match, text
    offset, divisor, plain = match.groups()
    return (float(offset), float(divisor)) if offset else (0.0, float(plain) if plain else 1.0)


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


LAYERS = ("data", "models", "engine", "evaluation", "experiments")   # README "Layout": bottom-up
TOOLS = ("cli", "predict", "app", "demo")                            # on top: only they may import anything


def _promptiqa_imports(path: Path, package: tuple):
    """(line, module under promptiqa) of every import in ``path`` (lazy ones inside functions too)."""
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package)[:len(package) - (node.level - 1)]
            yield node.lineno, ".".join(base + ([node.module] if node.module else []))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("promptiqa."):
            yield node.lineno, node.module[len("promptiqa."):]
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name[len("promptiqa."):]) for a in node.names if a.name.startswith("promptiqa."))


def test_nothing_imports_upwards():
    """The README's layout claim: data and models know nothing of training, and no layer imports one above it or a
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


def test_the_install_table_names_the_extra_of_every_command():
    """README "Install": each command is in the row of the extra the registry checks for it (the core for none)."""
    from promptiqa.cli import COMMANDS

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = {}
    for install, (_, commands) in _table(text, "install").items():
        extra = re.search(r'\[(\w+)\]|$', install).group(1)
        listed.update({name: extra for name in re.findall(r"`promptiqa ([\w-]+)`", commands)})
    assert listed == {name: command.extra for name, command in COMMANDS.items()}
