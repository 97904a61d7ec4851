"""Entry point of the Bazel py_test targets in tests/BUILD: runs pytest on the module(s)
given as arguments, e.g. `bazel_pytest.py tests/test_config.py`.

Bazel starts it inside the test's runfiles folder, a copy of the repository made of symlinks
to the checkout. The module is handed to pytest by its real path, so pytest's rootdir,
pytest.ini, tests/conftest.py and the fixture paths are those of the checkout, exactly as
under a plain `pytest` run (the library resolves its own paths the same way, e.g.
asl_tf/data/synthetic.py's REPO_ROOT; tests compare such paths). The runfiles still list
every input (module, conftest, helpers, fixtures, pytest.ini, the library), which is what
decides when Bazel re-runs a target instead of reporting its cached result.

Bazel's test protocol is honoured: the result is the exit status, the JUnit XML goes to
$XML_OUTPUT_FILE, temporary files to $TEST_TMPDIR, and `bazel test --test_filter=EXPR`
becomes pytest's `-k EXPR`.
"""
import os
import sys


def main(argv):
    """Runs pytest on the test module paths in `argv`; returns pytest's exit status."""
    if not argv:
        print("usage: bazel_pytest.py TEST_MODULE.py [pytest options]", file=sys.stderr)
        return 2
    # Neither the checkout nor the runfiles tree is ours to write: no __pycache__, no cache.
    sys.dont_write_bytecode = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import pytest

    args = ["-q", "-p", "no:cacheprovider"]
    tmp = os.environ.get("TEST_TMPDIR")
    if tmp:
        args += ["--basetemp", os.path.join(tmp, "pytest")]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args += ["--junitxml", xml]
    only = os.environ.get("TESTBRIDGE_TEST_ONLY")
    if only:
        args += ["-k", only]
    argv = [os.path.realpath(a) if os.path.isfile(a) else a for a in argv]
    return int(pytest.main(args + argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
