"""The import direction of the house: pipelines -> {continual, registry} -> tasks.

- tasks imports none of continual, registry, pipelines;
- continual and registry never import each other, nor pipelines;
- nothing outside pipelines imports pipelines.

Every import statement counts, including those inside functions (lazy imports are still
dependencies); relative imports are resolved against the importing module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "continual", "registry", "pipelines")
FORBIDDEN: dict[str, set[str]] = {
    "tasks": {"continual", "registry", "pipelines"},
    "continual": {"registry", "pipelines"},
    "registry": {"continual", "pipelines"},
    "pipelines": set(),
}


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of the modules that `source` (the module `module`) imports."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
    return found


def violations(module: str, imports: set[str]) -> list[str]:
    """`module imports name` for each import that goes against the direction."""
    top = module.split(".")[0]
    return [
        f"{module} imports {name}"
        for name in sorted(imports)
        if name.split(".")[0] in FORBIDDEN.get(top, set())
    ]


def modules() -> list[tuple[str, Path]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append((".".join(parts), path))
    return found


def test_every_package_is_walked() -> None:
    walked = {name.split(".")[0] for name, _ in modules()}
    assert walked == {p for p in PACKAGES if (ROOT / p).is_dir()}
    assert {"tasks", "continual", "pipelines"} <= walked
    assert len(modules()) > 20


def test_imports_follow_the_direction() -> None:
    problems = []
    for name, path in modules():
        is_package = path.name == "__init__.py"
        module = name.removesuffix(".__init__") if is_package else name
        problems += violations(
            module, imported_modules(path.read_text(), module, is_package=is_package)
        )
    assert not problems, (
        "imports against pipelines -> {continual, registry} -> tasks:\n" + "\n".join(problems)
    )


@pytest.mark.parametrize(
    ("module", "source", "bad"),
    [
        ("continual.foo", "from registry.records import Record", "registry.records"),
        ("continual.foo", "def f():\n    import pipelines.cli\n", "pipelines.cli"),
        ("registry.sub.mod", "import continual.train as t", "continual.train"),
        ("tasks.spec", "from continual import prefix", "continual"),
        ("tasks.catalog.x", "from pipelines import jobs", "pipelines"),
    ],
)
def test_checker_flags_a_bad_import(module: str, source: str, bad: str) -> None:
    """The checker can fail: a synthetic bad import is caught."""
    assert violations(module, imported_modules(source, module)) == [f"{module} imports {bad}"]


def test_checker_resolves_relative_imports_and_allows_the_direction() -> None:
    assert imported_modules("from . import spec\nfrom ..errors import X", "tasks.catalog.trec") == {
        "tasks.catalog",
        "tasks.errors",
    }
    assert imported_modules("from .records import R", "registry", is_package=True) == {
        "registry.records"
    }
    for module, source in [
        ("pipelines.jobs", "import continual, registry, tasks"),
        ("continual.train", "from tasks.spec import TaskSpec"),
        ("registry.api", "from tasks.errors import ConfigError"),
        ("tasks.spec", "from .errors import ConfigError\nimport torch"),
    ]:
        assert violations(module, imported_modules(source, module)) == []
