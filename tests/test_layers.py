"""The layers of the package, as a test: each import goes down the stack, and no package imports
one that imports it back (lazy imports inside functions included).

    leaves (tokenizer, retrieval) <- base modules <- data <- models <- zeroshot, loop
        <- pretrain, train, finetune <- evaluate, robustness, demo, serve <- cli

Read from the source with ``ast``, so a violation is found without importing anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> the package it installs as (pyproject.toml's package-dir)
SOURCES = {"echoclip": "echoclip", "tokenizer": "echoclip.tokenizer", "retrieval": "echoclip.retrieval"}
LEAVES = ("echoclip.tokenizer", "echoclip.retrieval")
BASE = (
    "echoclip",  # the lazy public API: names, not imports
    "echoclip.errors",
    "echoclip.atomic",
    "echoclip.registry",
    "echoclip.formats",
    "echoclip.precision",
    "echoclip.processes",
    "echoclip.ranks",
    "echoclip.allocator",
    "echoclip.metrics",
    "echoclip.plots",
    "echoclip.configs",
)
# each layer may import the layers before it, and itself; rank of every top-level unit
LAYERS: list[tuple[str, ...]] = [
    LEAVES,
    BASE,
    ("echoclip.data",),
    ("echoclip.models",),
    ("echoclip.zeroshot", "echoclip.loop"),
    ("echoclip.pretrain", "echoclip.train", "echoclip.finetune"),
    ("echoclip.evaluate", "echoclip.robustness", "echoclip.demo", "echoclip.serve", "echoclip.views"),
    ("echoclip.cli",),
]
# units of one layer that may not import one another (siblings, not a stack)
SIBLINGS = [LAYERS[4], LAYERS[5]]


def unit(module: str) -> str:
    """The unit a module belongs to: ``echoclip.<package or module>`` (or the root)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def rank(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise KeyError(f"{name} is in no layer; add it to tests/test_layers.py")


def source_modules(sources: dict[str, str], root: Path) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for folder, package in sources.items():
        for file in sorted((root / folder).rglob("*.py")):
            rel = file.relative_to(root / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            modules[".".join([package, *parts])] = file
    return modules


def imports_of(module: str, file: Path, known: set[str]) -> set[str]:
    """Every echoclip module ``file`` imports, anywhere in it (absolute or relative)."""
    tree = ast.parse(file.read_text(encoding="utf-8"))
    is_package = file.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return {m for m in found if m == "echoclip" or m.startswith("echoclip.")}


def violations(sources: dict[str, str], root: Path) -> list[str]:
    """Imports that go up the stack or across siblings, and cycles between units."""
    modules = source_modules(sources, root)
    known = set(modules)
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for module, file in modules.items():
        here = unit(module)
        for target in imports_of(module, file, known):
            there = unit(target)
            if there == here:
                continue
            graph.setdefault(here, set()).add(there)
            if here in LEAVES:
                problems.append(f"{module} imports {target}: a leaf library imports nothing from echoclip")
            elif rank(there) > rank(here):
                problems.append(f"{module} imports {target}, a layer above it")
            elif any(here in s and there in s for s in SIBLINGS):
                problems.append(f"{module} imports {target}: {here} and {there} are siblings")
            elif there == "echoclip.cli":
                problems.append(f"{module} imports {target}: only the command line imports echoclip.cli")
    problems += [f"import cycle: {' -> '.join(c)}" for c in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each unit that can reach itself (the root facade left out)."""
    found = []
    for start in sorted(graph):
        if start == "echoclip":
            continue
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == "echoclip":
                    continue
                if nxt == start:
                    found.append([*path, start])
                    stack = []
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return found


def test_the_package_keeps_its_layers():
    assert violations(SOURCES, ROOT) == []


def test_every_unit_has_a_layer():
    for module in source_modules(SOURCES, ROOT):
        rank(unit(module))


@pytest.mark.parametrize(
    "where, line, expected",
    [
        ("echoclip/data/video.py", "from echoclip.models import factory", "a layer above it"),
        ("echoclip/models/embed.py", "    from echoclip.loop.trainer import Trainer", "a layer above it"),
        ("echoclip/loop/trainer.py", "import echoclip.train.clip", "a layer above it"),
        ("echoclip/train/clip.py", "from echoclip.pretrain import probe", "siblings"),
        ("echoclip/serve/app.py", "from echoclip.cli import main", "a layer above it"),
        ("tokenizer/cleaning.py", "from echoclip.errors import ConfigError", "a leaf library"),
        ("echoclip/demo.py", "from echoclip.cli.main import main", "a layer above it"),
    ],
)
def test_a_forbidden_import_is_found(tmp_path, where, line, expected):
    """The check on a copy of the sources with one import added, at the top or inside a function."""
    import shutil

    for folder in SOURCES:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    file = tmp_path / where
    body = f"def later():\n{line}\n" if line.startswith(" ") else f"{line}\n"
    file.write_text(file.read_text(encoding="utf-8") + "\n\n" + body, encoding="utf-8")
    found = violations(SOURCES, tmp_path)
    assert found and all(expected in p or "cycle" in p for p in found), found


def test_a_cycle_between_two_units_is_found(tmp_path):
    (tmp_path / "echoclip" / "zeroshot").mkdir(parents=True)
    (tmp_path / "echoclip" / "loop").mkdir(parents=True)
    (tmp_path / "echoclip" / "zeroshot" / "a.py").write_text("from echoclip.loop import b\n")
    (tmp_path / "echoclip" / "loop" / "b.py").write_text("def f():\n    from echoclip.zeroshot import a\n")
    found = violations({"echoclip": "echoclip"}, tmp_path)
    assert any("cycle" in p for p in found) and any("siblings" in p for p in found)
