"""The import graph of the project reads top-down (issue 13, point 4).

Every module of asl_tf/, export/ and edge/ imports; the graph of project imports, built with
`ast` from the sources (every `import` statement, top-level or inside a function), has no
cycle and keeps the house rules: edge/ imports no TensorFlow, Keras or asl_tf; the asl_tf
library (not cli/, not pipelines/) imports no export/ and no edge.runtime / edge.stream;
nothing imports tests/ or bench/; no CLI module is over 250 lines.
"""
import ast
import importlib
import importlib.util
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("asl_tf", "export", "edge")
HAS_BEAM = importlib.util.find_spec("apache_beam") is not None
MAX_CLI_LINES = 250


def _module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources():
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


SOURCES = _sources()


def _needs_beam(name):
    return name.startswith(("asl_tf.pipelines", "asl_tf.cli.beam"))


def _imports(name, path):
    """Absolute names of every module `name` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)   # `from pkg import module`
    return out


def _project(target):
    """The project module `target` names (longest known prefix), or None."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in SOURCES:
            return cand
    return None


GRAPH = {name: _imports(name, path) for name, path in SOURCES.items()}


def _edges():
    """{module: {project module it imports}} (package __init__ parents not counted as edges)."""
    out = {}
    for name, targets in GRAPH.items():
        deps = {_project(t) for t in targets} - {None, name}
        out[name] = {d for d in deps if not name.startswith(d + ".")}
    return out


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_module_imports(name):
    if _needs_beam(name) and not HAS_BEAM:
        pytest.skip("apache_beam is not installed")
    importlib.import_module(name)


def test_graph_is_built_from_real_imports():
    # a known edge of each kind, so the checks below cannot pass on an empty graph
    edges = _edges()
    assert "asl_tf.model.detector" in edges["asl_tf.compat.actionformer"]
    assert "edge.postprocess" in edges["asl_tf.inference"]
    assert "asl_tf.data.pipeline" in edges["asl_tf.inference"]
    assert len(SOURCES) > 40


def _find_cycle(edges):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(edges.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                cyc = visit(d)
                if cyc:
                    return cyc
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state:
            cyc = visit(n)
            if cyc:
                return cyc
    return None


def test_find_cycle_finds_one():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cyc = _find_cycle(_edges())
    assert cyc is None, "import cycle: " + " -> ".join(cyc)


def _roots(targets):
    return {t.split(".")[0] for t in targets}


def test_edge_imports_no_tensorflow_keras_or_asl_tf():
    bad = {n: sorted(_roots(t) & {"tensorflow", "keras", "asl_tf", "export", "jax", "tf_keras"})
           for n, t in GRAPH.items() if n.split(".")[0] == "edge"}
    assert not {n: b for n, b in bad.items() if b}


def _library(name):
    return name.split(".")[0] == "asl_tf" and not name.startswith(("asl_tf.cli", "asl_tf.pipelines"))


def test_library_imports_no_export_or_edge_runtime():
    bad = {}
    for name, targets in GRAPH.items():
        if _library(name):
            hits = [t for t in targets if t.split(".")[0] == "export"
                    or t.startswith(("edge.runtime", "edge.stream", "edge.cli", "edge.video"))]
            if hits:
                bad[name] = hits
    assert not bad


def test_only_cli_and_pipelines_import_beam():
    bad = [n for n, t in GRAPH.items() if "apache_beam" in _roots(t)
           and not n.startswith(("asl_tf.cli", "asl_tf.pipelines"))]
    assert not bad


def test_nothing_imports_tests_or_bench():
    test_modules = {p.stem for p in (REPO / "tests").glob("*.py")}   # reached via sys.path
    banned = {"tests", "bench", "conftest"} | test_modules
    bad = {n: sorted(_roots(t) & banned) for n, t in GRAPH.items()}
    assert not {n: b for n, b in bad.items() if b}


def test_no_cli_module_over_size():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines())
             for p in sorted((REPO / "asl_tf" / "cli").glob("*.py"))}
    assert sizes and not {n: s for n, s in sizes.items() if s > MAX_CLI_LINES}, sizes
