"""The import graph reads top-down (issue 13, point 4).

Every module of asl_tf/, export/ and edge/ imports; the graph of project imports (read with
`ast`, so lazy imports inside functions count too) has no cycle; edge/ never imports
TensorFlow, Keras or asl_tf; the asl_tf library (all but asl_tf/cli and asl_tf/pipelines)
never imports export/, edge.runtime or edge.stream; no project module imports tests/ or
bench/; no CLI module is over 250 lines.
"""
import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("asl_tf", "export", "edge")
CLI_MAX_LINES = 250


def _modules():
    """{dotted module name: path} for every .py file under the project packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name, path):
    """Every absolute module name `path` imports (top level and inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            found.add(mod)
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            found.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES)
    return found


def _project_edges():
    """{module: set of project modules it imports}, packages resolved to their __init__."""
    graph = {}
    for name, path in MODULES.items():
        deps = set()
        for mod in _imports(name, path):
            if mod in MODULES and mod != name:
                deps.add(mod)
        graph[name] = deps
    return graph


GRAPH = _project_edges()
RAW = {name: _imports(name, path) for name, path in MODULES.items()}


def _is_under(mod, prefix):
    return mod == prefix or mod.startswith(prefix + ".")


def test_graph_is_not_trivial():
    # the checks below mean something only if the walk found the modules and their imports
    assert len(MODULES) > 40
    assert "asl_tf.model.detector" in GRAPH["asl_tf.compat.actionformer"]
    assert "edge.postprocess" in GRAPH["export.verify"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def _cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    # a package's __init__ importing its own submodules is not a cycle of meaning: drop the
    # edges from a package to the modules inside it
    graph = {v: {w for w in deps if not _is_under(w, v)} for v, deps in GRAPH.items()}
    assert _cycles(graph) == []


def test_edge_imports_no_tensorflow_keras_or_asl_tf():
    bad = {name: sorted(m for m in RAW[name]
                        if any(_is_under(m, p) for p in ("tensorflow", "keras", "asl_tf",
                                                         "export", "tests", "bench")))
           for name in MODULES if _is_under(name, "edge")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_library_imports_no_export_or_edge_runtime():
    forbidden = ("export", "edge.runtime", "edge.stream", "edge.cli", "apache_beam")
    bad = {}
    for name in MODULES:
        if not _is_under(name, "asl_tf") or any(_is_under(name, p) for p in
                                                ("asl_tf.cli", "asl_tf.pipelines")):
            continue
        hits = sorted(m for m in RAW[name] if any(_is_under(m, p) for p in forbidden))
        if hits:
            bad[name] = hits
    assert bad == {}


def test_nothing_imports_tests_or_bench():
    bad = {name: sorted(m for m in RAW[name] if _is_under(m, "tests") or _is_under(m, "bench"))
           for name in MODULES}
    assert {k: v for k, v in bad.items() if v} == {}


def test_cli_modules_are_short():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines())
             for p in sorted((ROOT / "asl_tf" / "cli").glob("*.py"))}
    assert sizes, "no CLI modules found"
    assert {k: n for k, n in sizes.items() if n > CLI_MAX_LINES} == {}
