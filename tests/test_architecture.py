"""The package layers: no import cycle inside reindir_nb, no module importing a higher layer,
and every public name of the README's API block importable."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reindir_nb"
# lower index = lower layer; a module may import its own layer and those below it
LAYERS = ["core", "data", "simulation", "inr", "meta", "evaluation", "viz", "<top>"]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else LAYERS.index("<top>")


def _imports(path: Path) -> set[str]:
    """Every reindir_nb module imported anywhere in ``path`` (top level or inside functions)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("reindir_nb"):
                found.add(target)
                for alias in node.names:  # "from . import x" imports a submodule
                    candidate = f"{target}.{alias.name}"
                    if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or \
                            (PACKAGE.parent / candidate.replace(".", "/") / "__init__.py").exists():
                        found.add(candidate)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("reindir_nb")}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and str(arg.value).startswith("reindir_nb"):
                found.add(str(arg.value))
    found.discard(module)
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_layout_is_the_documented_one():
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert packages == sorted(LAYERS[:-1])
    flat = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert set(flat) <= {"__init__", "cli", "pipeline", "sweep", "train"}, flat  # entry points only


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "reindir_nb"))
def test_no_module_imports_a_higher_layer(module):
    own = _layer(module)
    higher = sorted(t for t in _imports(MODULES[module]) if t != "reindir_nb" and _layer(t) > own)
    assert not higher, f"{module} (layer {LAYERS[own]}) imports higher layers: {higher}"


def test_no_import_cycle():
    graph = {m: {t for t in _imports(p) if t in MODULES and t != "reindir_nb"} for m, p in MODULES.items()}
    # a package's __init__ importing its own submodules is not a cycle of the code
    for m in graph:
        graph[m] = {t for t in graph[m] if not (MODULES[m].name == "__init__.py" and t.startswith(m + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_layer_checker_catches_a_violation(tmp_path):
    """The checker itself: an upward import inside a function is found."""
    bad = PACKAGE / "core" / "_probe_upward.py"
    bad.write_text("def f():\n    from ..inr.registration import register\n    return register\n")
    try:
        targets = _imports(bad)
        assert "reindir_nb.inr.registration" in targets
        assert _layer("reindir_nb.inr.registration") > _layer("reindir_nb.core._probe_upward")
    finally:
        bad.unlink()


def test_every_public_name_of_the_readme_api_block_resolves():
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    names = set(re.findall(r"\brn\.([A-Za-z_][\w.]*[A-Za-z_0-9])", block))
    assert len(names) > 15
    rn = importlib.import_module("reindir_nb")
    for dotted in sorted(names):
        obj = rn
        for part in dotted.split("."):
            if isinstance(obj, type) or callable(obj) and not hasattr(obj, "__path__") and not hasattr(obj, part):
                break  # a method of a returned object (run.history ...) is not a module attribute
            obj = getattr(obj, part)
        assert obj is not None, dotted


# ------------------------------------------------------------------ size and shape of the code
def _modules() -> list[Path]:
    return sorted(MODULES.values())


MAX_PARAMETERS = 10  # per function (self/cls not counted; *args and **kwargs count one each)
MAX_MODULE_LINES = 700


def _parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = node.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    count = len(names) + (a.vararg is not None) + (a.kwarg is not None)
    return count - (1 if names and names[0].arg in ("self", "cls") else 0)


def _long_signatures(source: str) -> list[tuple[str, int, int]]:
    return [(node.name, node.lineno, _parameter_count(node)) for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _parameter_count(node) > MAX_PARAMETERS]


def test_no_function_takes_more_than_ten_parameters():
    """Typed settings objects instead of long argument lists (dataclass fields are not parameters)."""
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line} {name}({n} parameters)"
                 for path in _modules() for name, line, n in _long_signatures(path.read_text())]
    assert not offenders, "\n".join(offenders)


def test_the_parameter_checker_counts_what_it_should():
    eleven = "def f(a, b, c, d, e, f, g, h, i, j, *, k=1): pass\n"
    method = "class A:\n    def m(self, a, b, c, d, e, f, g, h, i, **kw): pass\n"
    assert [n for _, _, n in _long_signatures(eleven)] == [11] and _long_signatures(method) == []


def test_no_module_is_longer_than_700_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long


def test_library_text_cites_no_benchmark_results():
    """Docstrings and comments say what the code does; what was measured lives in docs/results.md."""
    cites = [str(p.relative_to(PACKAGE.parent)) for p in _modules() if "benchmarks/results" in p.read_text()]
    assert not cites, cites


def test_profiles_come_from_their_file_and_bad_files_are_named(tmp_path):
    from reindir_nb.core.profiles import PROFILES, read_profiles

    assert set(PROFILES) == {"smoke", "demo", "paper"}
    demo = PROFILES["demo"]
    assert demo.patch_size == (64, 64, 64) and demo.elastix_budget == (250, 2) and demo.max_iterations == 300
    assert PROFILES["paper"].elastix_budget is None and PROFILES["paper"].outer_steps == 22750
    bad = tmp_path / "p.toml"
    bad.write_text("[tiny]\nspacing_mm = 8.0\nspacing = 3\n")
    with pytest.raises(ValueError, match=r"p.toml \[tiny\]: unknown fields \['spacing'\], missing fields"):
        read_profiles(bad)
