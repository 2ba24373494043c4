"""The layering of the packages, read from their source: who may import whom, and no import cycles.

model/ defines the network, neurons, delays, features and vocabulary; training/ and export/ build on it;
service/ needs only the ONNX file and model's torch-free modules; tests/ use only installed packages.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("model", "training", "export", "service", "loadtest")


def imported_names(path: Path) -> list[str]:
    """Every module a file imports, wherever the import stands (functions and TYPE_CHECKING blocks too)."""
    names = []
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the file's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import module`
    return names


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def first_party_modules() -> dict[str, Path]:
    return {module_name(p): p for package in FIRST_PARTY for p in (REPO / package).rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """module → the first-party modules it imports (importing ``a.b.c`` also runs ``a`` and ``a.b``)."""
    modules = first_party_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path):
            parts = imported.split(".")
            targets |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules.keys()
        graph[name] = targets - {name}
    return graph


def forbidden_imports(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(REPO)} imports {name}" for path in (REPO / package).rglob("*.py")
            for name in imported_names(path) if name.split(".")[0] in forbidden]


@pytest.mark.parametrize("package, forbidden", [
    ("service", ("torch", "training", "DCLS", "dcls", "export", "benchmarks")),
    ("model", ("training", "export", "service", "benchmarks")),
    ("export", ("service", "benchmarks")),
    ("tests", ("benchmarks",)),  # benchmarks/ is not an installed package
])
def test_packages_import_only_what_their_layer_may(package, forbidden):
    assert forbidden_imports(package, forbidden) == []


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Each cycle found by a depth-first walk, as ``a -> b -> a``."""
    state: dict[str, str] = {}  # "open" while on the walk's stack, "done" after
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*stack[stack.index(target):], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert {"service.state", "service.detector"} <= graph["service.routes.stream"]  # the graph holds real edges
    assert import_cycles(graph) == []


def test_the_cycle_check_finds_cycles():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert import_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def string_constants(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal of a file but its docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_label_names_are_spelled_once():
    """`_unknown_` and `_silence_` (and so which labels are keywords) are defined in model/vocabulary.py only."""
    from model.vocabulary import NON_KEYWORDS

    spelt = [f"{path.relative_to(REPO)}:{line}" for package in (*FIRST_PARTY, "benchmarks", "evaluation")
             for path in (REPO / package).rglob("*.py") if path != REPO / "model" / "vocabulary.py"
             for line, text in string_constants(path) if any(label in text for label in NON_KEYWORDS)]
    assert spelt == []


def run_isolated(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_running_the_app_loads_neither_torch_nor_training():
    run_isolated("import sys; from fastapi.testclient import TestClient; from service.app import create_app;\n"
                 "with TestClient(create_app()) as c: c.get('/healthz')\n"
                 "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'training', 'DCLS', 'export', 'librosa')]\n"
                 "assert not bad, bad")


def test_the_stream_detector_imports_without_the_web_stack():
    """kws-robustness runs service/detector.py offline: no FastAPI, Starlette or pydantic(-settings)."""
    run_isolated("import sys; import service.detector\n"
                 "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'pydantic', "
                 "'pydantic_settings', 'onnxruntime', 'torch')]\n"
                 "assert not bad, bad")
