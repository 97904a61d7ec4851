"""The light edge package: edge/ imports nothing heavy, and edge/pyproject.toml builds a wheel
that depends on numpy and ai-edge-litert only (onnxruntime and PyAV as extras)."""
import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from conftest import REPO

EDGE = REPO / "edge"
ALLOWED_THIRD_PARTY = {"numpy", "ai_edge_litert", "onnxruntime", "av"}


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0], node.lineno


@pytest.mark.parametrize("path", sorted(EDGE.glob("*.py")), ids=lambda p: p.name)
def test_edge_imports_only_numpy_runtimes_stdlib_and_edge(path):
    for name, line in _imports(path):
        ok = (name in ALLOWED_THIRD_PARTY or name == "edge"
              or name in sys.stdlib_module_names)
        assert ok, f"{path.name}:{line} imports {name!r} (edge/ must run without TensorFlow)"


def test_pyav_is_optional():
    """Only edge/frames.py imports av, inside a function: the runtime, the stream and the CLI
    (without --video) load without PyAV installed."""
    users = [p.name for p in EDGE.glob("*.py") if any(n == "av" for n, _ in _imports(p))]
    assert users == ["frames.py"]
    tree = ast.parse((EDGE / "frames.py").read_text())
    assert not any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in tree.body
                   if "av" in [a.name for a in getattr(node, "names", [])])
    code = ("import sys, edge.cli, edge.video, edge.frames, edge.encoder\n"
            "assert 'av' not in sys.modules, 'av imported at module load'\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert res.returncode == 0, res.stderr


def test_light_package_spec():
    spec = tomllib.loads((EDGE / "pyproject.toml").read_text())
    deps = [d.split("==")[0].split(">")[0].strip() for d in spec["project"]["dependencies"]]
    assert sorted(deps) == ["ai-edge-litert", "numpy"]
    extras = spec["project"]["optional-dependencies"]
    assert [d.split("==")[0] for d in extras["onnx"]] == ["onnxruntime"]
    assert [d.split("==")[0] for d in extras["video"]] == ["av"]
    assert spec["project"]["scripts"]["asl-edge"] == "edge.cli:main"


def test_light_package_builds_a_wheel_of_edge_only(tmp_path):
    src = tmp_path / "edge"
    shutil.copytree(EDGE, src, ignore=shutil.ignore_patterns(
        "__pycache__", "build", "*.egg-info"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("asl_tf_edge-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
        entry = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    modules = sorted(n for n in names if not n.startswith("asl_tf_edge-"))
    assert modules == sorted(f"edge/{p.name}" for p in EDGE.glob("*.py"))
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines()
                if line.startswith("Requires-Dist:")]
    base = sorted(r.split("==")[0] for r in requires if "extra ==" not in r)
    assert base == ["ai-edge-litert", "numpy"]
    assert any(r.startswith("onnxruntime") and 'extra == "onnx"' in r for r in requires)
    assert "asl-edge = edge.cli:main" in entry
