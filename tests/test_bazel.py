"""The Bazel wiring (WORKSPACE, tests/BUILD, tests/bazel_pytest.py), checked without Bazel.

`make bazel-test` runs the targets themselves; these tests catch, under plain pytest, a smoke
target whose module was renamed, a missing offline stub, and a runner that would turn a
failing module into a passing Bazel target.
"""
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO

RUNNER = REPO / "tests" / "bazel_pytest.py"

MODULE = '''
def test_ok():
    assert sum([1, 2]) == 3

def test_bad():
    assert sum([1, 2]) == 4
'''


def _run(args, tmp_path, **env):
    """Runs the Bazel test runner as Bazel would; returns the completed process."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("XML_OUTPUT_FILE", "TESTBRIDGE_TEST_ONLY", "TEST_TMPDIR")}
    full_env.update(env)
    return subprocess.run([sys.executable, str(RUNNER), *args], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_runner_reports_failure_filter_and_xml(tmp_path):
    (tmp_path / "test_mod.py").write_text(MODULE)
    res = _run(["test_mod.py"], tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 failed, 1 passed" in res.stdout

    xml = tmp_path / "out" / "test.xml"
    xml.parent.mkdir()
    res = _run(["test_mod.py"], tmp_path, XML_OUTPUT_FILE=str(xml),
               TESTBRIDGE_TEST_ONLY="test_ok", TEST_TMPDIR=str(tmp_path / "t"))
    assert res.returncode == 0, res.stdout + res.stderr
    suite = ET.parse(xml).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("1", "0")
    assert [c.get("name") for c in suite.iter("testcase")] == ["test_ok"]


def test_runner_needs_a_module(tmp_path):
    assert _run([], tmp_path).returncode == 2
    (tmp_path / "test_empty.py").write_text("X = 1\n")
    assert _run(["test_empty.py"], tmp_path).returncode == 5  # nothing collected is no pass


def test_smoke_suite_names_existing_modules():
    build = (REPO / "tests" / "BUILD").read_text()
    smoke = re.search(r'name = "smoke",\s*tests = \[(.*?)\]', build, re.S)
    assert smoke, "tests/BUILD has no smoke test_suite"
    names = re.findall(r'":(test_\w+)"', smoke.group(1))
    assert len(names) >= 2
    for name in names:
        assert (REPO / "tests" / f"{name}.py").is_file(), f"tests/BUILD smoke: {name}.py missing"


@pytest.mark.parametrize("group", ["GOLDEN", "EXPORT"])
def test_build_groups_list_existing_modules(group):
    build = (REPO / "tests" / "BUILD").read_text()
    listed = re.search(r"^%s = \[(.*?)\]" % group, build, re.S | re.M)
    assert listed, f"tests/BUILD has no {group} list"
    for name in re.findall(r'"([^"]+)"', listed.group(1)):
        assert (REPO / "tests" / name).is_file(), f"tests/BUILD {group}: {name} missing"


@pytest.mark.parametrize("repo,files", [
    ("rules_cc", ["WORKSPACE", "BUILD", "cc/BUILD", "cc/defs.bzl"]),
    ("rules_java", ["WORKSPACE", "BUILD", "java/BUILD", "java/defs.bzl"]),
    ("remote_coverage_tools", ["WORKSPACE", "BUILD", "noop.sh"]),
])
def test_offline_stubs_are_wired(repo, files):
    workspace = (REPO / "WORKSPACE").read_text()
    m = re.search(r'local_repository\(\s*name = "%s",\s*path = "([^"]+)"' % repo, workspace)
    assert m, f"WORKSPACE: no local_repository {repo}"
    for f in files:
        assert (REPO / m.group(1) / f).is_file(), f"{m.group(1)}/{f} missing"
    assert 'workspace(name = "%s")' % repo in (REPO / m.group(1) / "WORKSPACE").read_text()
