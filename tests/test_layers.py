"""The package's layers: data flows one way (see the layout in the README).

Every import of a blindcheck module — at module level or inside a function, where the lazy imports live — goes
to a module of the same layer or of a lower one, and no two modules import each other, directly or round a
circle. The package's own ``__init__`` is the API facade: its functions import the verbs lazily, and every
layer may read ``blindcheck.__version__`` from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "blindcheck"
LAYERS = ("foundation", "runtime", "inputs", "features", "extraction", "analysis", "verbs", "reporting", "cli")
FOUNDATION = {"blindcheck", "blindcheck.errors", "blindcheck.settings"}


def module_name(path: Path) -> str:
    parts = ["blindcheck", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    if module in FOUNDATION:
        return 0
    if module in ("blindcheck.cli", "blindcheck.__main__"):
        return LAYERS.index("cli")
    sub = module.split(".")[1]
    if sub not in LAYERS:
        raise AssertionError(f"{module} belongs to no layer: put it in one of {', '.join(LAYERS[1:-1])}")
    return LAYERS.index(sub)


def resolve(name: str, modules: set[str]) -> str | None:
    """The blindcheck module that ``name`` (a module, or a module's attribute) denotes."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports(path: Path, modules: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every blindcheck import in the file, module level and lazy."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("blindcheck"):
            if node.module == "blindcheck" and all(a.name == "__version__" for a in node.names):
                continue  # the version string: every layer may read it
            for a in node.names:
                target = resolve(f"{node.module}.{a.name}", modules)
                if target and target != me:
                    out.append((target, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                target = resolve(a.name, modules) if a.name.startswith("blindcheck") else None
                if target and target != me:
                    out.append((target, node.lineno))
    return out


def graph() -> dict[str, list[tuple[str, int]]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    g = {m: imports(p, modules) for m, p in files.items()}
    g["blindcheck"] = []  # the facade's lazy verb functions (see the module docstring)
    return g


def test_every_import_goes_to_the_same_or_a_lower_layer():
    bad = [f"{m} (line {line}, layer {LAYERS[layer(m)]}) imports {t} (layer {LAYERS[layer(t)]})"
           for m, edges in graph().items() for t, line in edges if layer(t) > layer(m)]
    assert not bad, "imports that run up the layers:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    g = {m: sorted({t for t, _ in edges}) for m, edges in graph().items()}
    index, low, stack, on, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_no_module_shares_a_verb_name():
    """``blindcheck.check``, ``.correlate``, ``.match``, ``.report``, ``.dataset_inference`` are functions; no
    module of the package may carry one of those names where it would shadow the function."""
    verbs = {"check", "correlate", "match", "report", "dataset_inference", "di"}
    clash = [p for p in ROOT.iterdir() if p.stem in verbs and (p.suffix == ".py" or p.is_dir())]
    assert not clash, f"modules named like a verb at the top of the package: {clash}"


@pytest.mark.parametrize("sub", LAYERS[1:-1])
def test_each_layer_is_a_package(sub):
    assert (ROOT / sub / "__init__.py").is_file()


def test_no_private_name_crosses_a_module():
    """A name that starts with an underscore stays in its module: another module that needs it imports a public
    helper (tests and benchmarks aside, which may reach into internals to time or check them)."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("blindcheck"):
                found += [f"{module_name(path)}: from {node.module} import {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == [], found
