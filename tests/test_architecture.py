"""The import direction of the house: bench -> pipelines -> {continual, registry} -> tasks.

- tasks imports none of continual, registry, pipelines;
- continual and registry never import each other, nor pipelines;
- nothing outside pipelines (and bench, its user) imports pipelines;
- bench uses the public API only: no private module or name (a leading underscore) and none
  of the registry's internals (its ORM rows, sessions and repositories never leave `registry/`);
- no import cycle among the modules of any package, bench included (one layer, no knots: a
  plugin folder imports the seam, never the core that looks it up), type-only imports counted;
- no source file over 400 lines.

Every import statement counts, including those inside functions (lazy imports are still
dependencies); relative imports are resolved against the importing module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "continual", "registry", "pipelines", "bench")
FORBIDDEN: dict[str, set[str]] = {
    "tasks": {"continual", "registry", "pipelines", "bench"},
    "continual": {"registry", "pipelines", "bench"},
    "registry": {"continual", "pipelines", "bench"},
    "pipelines": {"bench"},
    "bench": set(),
}
#: The registry's internals: what its facade (`registry.Registry` and its records) wraps.
REGISTRY_INTERNALS = (
    "registry.orm",
    "registry.uow",
    "registry.repository",
    "registry.stream_repository",
    "registry.job_repository",
)
MAX_LINES = 400


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
    assert {"tasks", "continual", "registry", "pipelines", "bench"} <= walked
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


# --- no cycles inside continual ------------------------------------------------------------------


def import_targets(
    source: str, module: str, *, is_package: bool = False, known: set[str] | None = None
) -> set[str]:
    """`imported_modules`, plus `package.name` for each `from package import name` (the name
    may be a submodule). With `known` (every module's name), `from package import sub, ...`
    where each name is a known submodule depends on those submodules only: it needs nothing
    the package's `__init__` defines."""
    found = imported_modules(source, module, is_package=is_package)
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            subs = {f"{name}.{alias.name}" for alias in node.names}
            found.update(subs)
            inside = module.startswith(name + ".")
            if (
                known is not None
                and inside
                and subs <= known
                and not any((n == name) for n in imported_plainly(source, name))
            ):
                found.discard(name)
    return found


def imported_plainly(source: str, name: str) -> list[str]:
    """`import name` statements naming exactly `name` (they do run its `__init__`)."""
    return [
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name == name
    ]


def dependency_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> the modules among `sources` it makes Python import: the ones it names, and
    the packages above them whose `__init__` runs first (unless it is inside that package
    already). `sources`: module name -> (source text, is a package's `__init__`)."""
    known = set(sources)
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        edges: set[str] = set()
        for name in import_targets(source, module, is_package=is_package, known=known):
            if name not in known:
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                inside = module == target or module.startswith(target + ".")
                if target in known and target != module and not (i < len(parts) and inside):
                    edges.add(target)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (`[a, b, ..., a]`), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def package_sources(package: str) -> dict[str, tuple[str, bool]]:
    out = {}
    for name, path in modules():
        if name.split(".")[0] != package:
            continue
        is_package = path.name == "__init__.py"
        out[name.removesuffix(".__init__") if is_package else name] = (path.read_text(), is_package)
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package: str) -> None:
    sources = package_sources(package)
    assert sources, package
    cycle = find_cycle(dependency_graph(sources))
    assert cycle is None, f"import cycle inside {package}: " + " -> ".join(cycle)


def test_the_cycle_walk_sees_the_known_modules() -> None:
    assert {"continual.modules.base", "continual.train.loop"} <= set(package_sources("continual"))
    assert {"registry.api", "registry.registration"} <= set(package_sources("registry"))


def private_uses(source: str, module: str) -> list[str]:
    """What `source` (a bench module) takes from the project that is not its public API."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and not node.level:
            name = node.module or ""
            if name.split(".")[0] not in ("tasks", "continual", "registry", "pipelines"):
                continue
            if any(part.startswith("_") for part in name.split(".")):
                bad.append(f"{module} imports {name}")
            if name in REGISTRY_INTERNALS:
                bad.append(f"{module} imports {name}")
            for alias in node.names:
                if alias.name.startswith("_") or f"{name}.{alias.name}" in REGISTRY_INTERNALS:
                    bad.append(f"{module} imports {name}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in REGISTRY_INTERNALS or "._" in alias.name:
                    bad.append(f"{module} imports {alias.name}")
    return bad


def test_bench_uses_only_the_public_api() -> None:
    problems = []
    for name, path in modules():
        if name.split(".")[0] == "bench":
            problems += private_uses(path.read_text(), name)
    assert not problems, "bench reaches past the public API:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "from continual.objectives.decoder import _tail",
        "from registry import orm",
        "import registry.uow",
        "from pipelines._x import y",
    ],
)
def test_public_api_checker_can_fail(source: str) -> None:
    assert private_uses(source, "bench.x")


def test_no_source_file_is_over_the_limit() -> None:
    long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for _, path in modules()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, f"files over {MAX_LINES} lines (split them):\n" + "\n".join(long)


def test_cycle_checker_can_fail() -> None:
    """A direct cycle, and one closed only through a package `__init__` that imports its plugins
    (the knot a plugin importing the core would tie), are both found; a plugin importing the
    seam from inside its package is not a cycle."""
    direct = {
        "continual.a": ("import continual.b", False),
        "continual.b": ("from continual import a", False),
    }
    assert find_cycle(dependency_graph(direct)) == ["continual.a", "continual.b", "continual.a"]
    plugins = {
        "continual.core": ("from continual.seam.base import X", False),
        "continual.seam": ("from continual.seam import plug", True),
        "continual.seam.base": ("", False),
        "continual.seam.plug": ("from continual.seam.base import X\nimport continual.core", False),
    }
    assert find_cycle(dependency_graph(plugins)) is not None
    plugins["continual.seam.plug"] = ("from continual.seam.base import X", False)
    assert find_cycle(dependency_graph(plugins)) is None
