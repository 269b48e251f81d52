"""trace/'s modules import each other one way: no cycle, and no import hidden in a function."""

from __future__ import annotations

import ast
from pathlib import Path

import dsacache.trace

TRACE_DIR = Path(dsacache.trace.__file__).parent
PACKAGE = "dsacache.trace"


def _module(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The trace modules an import statement names ('__init__' for the package itself)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif node.level:  # a relative import
        names = [f"{PACKAGE}.{node.module}" if node.module else PACKAGE]
    else:
        names = [node.module or ""]
        if node.module == PACKAGE:  # from dsacache.trace import model -> the module model
            names = [f"{PACKAGE}.{a.name}" for a in node.names]
    out = []
    for name in names:
        if name == PACKAGE:
            out.append("__init__")
        elif name.startswith(PACKAGE + "."):
            mod = name[len(PACKAGE) + 1 :].split(".")[0]
            out.append(mod if (TRACE_DIR / f"{mod}.py").exists() else "__init__")
    return out


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """module -> trace modules it imports (anywhere), and imports found inside functions."""
    graph: dict[str, set[str]] = {}
    nested: list[str] = []
    for path in sorted(TRACE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        deps: set[str] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import | ast.ImportFrom) and _module(node):
                        nested.append(f"{path.stem}.{fn.name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps.update(_module(node))
        graph[path.stem] = deps - {path.stem}
    return graph, nested


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_trace_modules_import_one_way() -> None:
    graph, nested = import_graph()
    assert nested == [], f"imports inside functions: {nested}"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
    # The format's layers, bottom up: request <- validate <- store, npz <- model <- io.
    assert graph["request"] <= {"geometry"}
    assert "model" not in graph["validate"] | graph["store"] | graph["npz"]
    assert "io" not in graph["model"]
    # The package's own modules never import the package (it imports them).
    assert all("__init__" not in deps for name, deps in graph.items() if name != "__init__")


def test_the_checker_finds_a_cycle_and_a_nested_import() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse("def f():\n    from dsacache.trace.store import TraceWriter\n")
    node = tree.body[0].body[0]
    assert _module(node) == ["store"]
    assert _module(ast.parse("from dsacache.trace import model, Trace").body[0]) == [
        "model",
        "__init__",
    ]


def test_public_names_still_import() -> None:
    from dsacache.trace import Chunk, RequestTrace, Trace, TraceWriter, open_trace
    from dsacache.trace.io import open_trace as io_open
    from dsacache.trace.model import DEFAULT_CHUNK_STEPS, default_context_lens
    from dsacache.trace.model import Chunk as ModelChunk
    from dsacache.trace.model import RequestTrace as ModelRequest
    from dsacache.trace.store import FORMAT_VERSION, RequestWriter
    from dsacache.trace.validate import MISSING, check_chunk_values

    assert ModelChunk is Chunk and ModelRequest is RequestTrace and io_open is open_trace
    assert DEFAULT_CHUNK_STEPS == 64 and FORMAT_VERSION == 1 and MISSING == -2
    assert callable(default_context_lens) and callable(check_chunk_values)
    assert Trace.load and TraceWriter and RequestWriter
