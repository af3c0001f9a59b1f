"""One-way layers: no package imports a package above it (ARCHITECTURE.md, "Layers").

    recsys  <-  pipelines  <-  app
            <-  serving    <-  app        (benchmarks/ and tests/ may import everything)

`recsys` (data format, models, training, retrieval, bundle, recommend) imports none of the
others; `pipelines` (Polars data preparation) and `serving` (Ray Serve, the Ray Data batch
job) import `recsys` only, not each other; `app` (the `recsys` CLI, the demo) imports
anything. Every import counts: module level, inside functions, under TYPE_CHECKING, and
`importlib.import_module("...")` / `__import__("...")` with a literal name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# package -> the other project packages it may import.
ALLOWED: dict[str, frozenset[str]] = {
    "recsys": frozenset(),
    "pipelines": frozenset({"recsys"}),
    "serving": frozenset({"recsys"}),
    "app": frozenset({"recsys", "pipelines", "serving", "benchmarks"}),
}
PROJECT = frozenset({*ALLOWED, "benchmarks", "tests"})


@dataclass(frozen=True)
class Violation:
    path: str  # relative to the checked root
    line: int
    imported: str

    def __str__(self) -> str:
        package = self.path.split("/", 1)[0]
        allowed = ", ".join(sorted(ALLOWED[package])) or "none of the others"
        return f"{self.path}:{self.line}: imports {self.imported} ({package} may import {allowed})"


def _module_name(path: Path, root: Path) -> list[str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _module_name(path, root)
    package = here if path.name == "__init__.py" else here[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's package, `level - 1` packages up
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def layer_violations(root: Path) -> tuple[list[Violation], int]:
    """Imports of a higher (or sibling) layer under `root`, and the number of files read."""
    violations: list[Violation] = []
    files = 0
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            files += 1
            for line, module in imported_modules(path, root):
                top = module.split(".", 1)[0]
                if top in PROJECT and top != package and top not in allowed:
                    violations.append(Violation(path.relative_to(root).as_posix(), line, module))
    return violations, files


def test_no_layer_imports_a_higher_one() -> None:
    violations, files = layer_violations(REPO)
    assert files > 50  # the real tree, not an empty directory
    assert not violations, "imports against the layers:\n" + "\n".join(map(str, violations))


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_finds_every_kind_of_upward_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "recsys/__init__.py": "",
            "recsys/ok.py": "import os\nimport recsys.dataset\nfrom . import metrics\n",
            "recsys/sub/deep.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from app.cli import main\n"
                "def f():\n"
                "    from pipelines.synth import make_dataset\n"
                "    import importlib\n"
                "    return importlib.import_module('serving.batch')\n"
            ),
            "pipelines/p.py": "from recsys import errors\nimport benchmarks.quick_train\n",
            "serving/s.py": "from recsys import bundle\n\n\nfrom pipelines import synth\n",
            "app/a.py": "import benchmarks\nfrom serving.app import AppArgs\nimport pipelines\n",
            "benchmarks/b.py": "import app.cli\n",  # not a layer: may import anything
            "tests/t.py": "import app\n",
        },
    )
    violations, files = layer_violations(root)
    assert files == 6  # recsys, pipelines, serving, app only
    assert [(v.path, v.line, v.imported) for v in violations] == [
        ("recsys/sub/deep.py", 3, "app.cli"),
        ("recsys/sub/deep.py", 5, "pipelines.synth"),
        ("recsys/sub/deep.py", 7, "serving.batch"),
        ("pipelines/p.py", 2, "benchmarks.quick_train"),
        ("serving/s.py", 4, "pipelines"),
    ]
    assert str(violations[-1]) == "serving/s.py:4: imports pipelines (serving may import recsys)"
    assert "recsys may import none of the others" in str(violations[0])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from . import x", "pkg.sub"),
        ("from .x import y", "pkg.sub.x"),
        ("from .. import y", "pkg"),
        ("from ..z import y", "pkg.z"),
    ],
)
def test_relative_imports_resolve_from_the_files_package(
    tmp_path: Path, source: str, expected: str
) -> None:
    root = _tree(tmp_path, {"pkg/sub/mod.py": source})
    assert imported_modules(root / "pkg/sub/mod.py", root) == [(1, expected)]
