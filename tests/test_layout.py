"""The folders are the architecture: no import cycles, and the core never imports the offline work or the tools."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "p2p_stream"
CORE = (
    "p2p_stream.config", "p2p_stream.ppg", "p2p_stream.model", "p2p_stream.wire",
    "p2p_stream.backends", "p2p_stream.stream", "p2p_stream.beats",
)  # fmt: skip
OUTER = ("p2p_stream.offline", "p2p_stream.tools")


def module_imports() -> dict[str, set[str]]:
    """Each module → the p2p_stream modules it imports at module level (imports inside functions are deferred)."""
    graph = {}
    for f in PACKAGE.rglob("*.py"):
        name = ".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("p2p_stream"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("p2p_stream")}
        graph[name] = deps
    return graph


def test_the_core_never_imports_offline_work_or_tools():
    graph = module_imports()
    assert len(graph) > 60  # the walk found the package
    wrong = sorted((m, d) for m, deps in graph.items() if m.startswith(CORE) for d in deps if d.startswith(OUTER))
    assert wrong == []


def imports_from(graph: dict[str, set[str]], below: str, above: str) -> list[tuple[str, str]]:
    """(module, import) pairs where a module of `below` imports one of `above`, at module level or deferred."""
    deferred = {}
    for f in PACKAGE.rglob("*.py"):
        name = ".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        deferred[name] = {
            node.module
            for node in ast.walk(ast.parse(f.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("p2p_stream")
        }
    return sorted((m, d) for m, deps in deferred.items() if m.startswith(below) for d in deps if d.startswith(above))


def test_backends_never_import_the_streaming_path():
    """Where the network runs knows nothing of sockets, windows or the worker: the seam is `backends.base`."""
    graph = module_imports()
    assert any(m.startswith("p2p_stream.backends.") for m in graph)
    assert imports_from(graph, "p2p_stream.backends", "p2p_stream.stream") == []


def test_the_wire_format_sits_below_the_daemon_and_the_tools():
    graph = module_imports()
    assert "p2p_stream.wire.protocol" in graph
    for above in ("p2p_stream.stream", "p2p_stream.backends", "p2p_stream.tools", "p2p_stream.offline"):
        assert imports_from(graph, "p2p_stream.wire", above) == []


def test_every_folder_says_what_it_owns():
    """Each package opens with a docstring: the file list draws the architecture."""
    silent = [
        str(f.relative_to(PACKAGE))
        for f in PACKAGE.rglob("__init__.py")
        if ast.get_docstring(ast.parse(f.read_text())) is None
    ]
    assert silent == []


def test_there_is_no_import_cycle():
    graph = module_imports()

    def known(name: str) -> str:
        while name and name not in graph:
            name = name.rpartition(".")[0]
        return name

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for dep in map(known, graph[node]):
                if dep == start:
                    return path + [dep]
                if dep and dep not in path and dep != node:
                    stack.append((dep, path + [dep]))
        return None

    cycles = [c for c in map(cycle_from, graph) if c]
    assert cycles == []
