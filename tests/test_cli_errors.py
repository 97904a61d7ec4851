"""One error path for every CLI (issue 17.5, 17.7, 17.9): `--help`/`-h` list the flags and exit
0; flag errors, unwritable outputs and other user errors print ONE line `prog: error: ...` and
exit 2 (no traceback, no "FATAL Flags parsing error", no TensorFlow start-up noise); Ctrl-C
exits 130 without a traceback; a closed stdout pipe ends quietly; a bug keeps its traceback and
`--debug` shows the traceback of user errors too."""
import os
import subprocess
import sys
import time

import pytest

from conftest import FIXTURES, REPO

THUMOS = FIXTURES / "data/thumos14/thumos14.json"
# (module, console name, a flag its help must list)
APPS = [("asl_tf.cli.train", "asl-train", "--workdir"), ("asl_tf.cli.eval", "asl-eval", "--pred"),
        ("asl_tf.cli.data", "asl-data", "--annotations"),
        ("asl_tf.cli.import_ckpt", "asl-import", "--checkpoint"),
        ("export.cli", "asl-export", "--quantize"), ("asl_tf.cli.demo", "asl-demo", "--workdir")]
UNWRITABLE = "/proc/asl-no/x"  # never creatable, also as root


def _env(quiet=True):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if not quiet:  # as a user runs it: TF's log level not set
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def _run(module, *args, quiet=True, timeout=240):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                          env=_env(quiet), capture_output=True, text=True, timeout=timeout)


def _one_error_line(p, prog, *needles):
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"{prog}: error: "), p.stderr
    for n in needles:
        assert n in lines[0], (n, p.stderr)
    assert "Traceback" not in p.stderr and "FATAL" not in p.stderr


@pytest.mark.parametrize("module,prog,flag", APPS, ids=[a[1] for a in APPS])
@pytest.mark.parametrize("opt", ["--help", "-h"])
def test_help_lists_flags(module, prog, flag, opt):
    p = _run(module, opt)
    assert p.returncode == 0, p.stderr
    assert f"  {flag}" in p.stdout and "--debug" in p.stdout
    assert "helpfull" not in p.stdout + p.stderr


@pytest.mark.parametrize("module,prog,args,needle", [
    ("asl_tf.cli.eval", "asl-eval", ["--dataset", "thumos15", "--gt", "g", "--pred", "p"],
     "--dataset=thumos15"),
    ("export.cli", "asl-export", ["--format", "tfjs"], "--format=tfjs"),
    ("asl_tf.cli.train", "asl-train", ["--strategy", "tpu"], "--strategy=tpu"),
    ("asl_tf.cli.data", "asl-data", ["stats", "--bogus", "1"], "bogus"),
    ("asl_tf.cli.eval", "asl-eval", ["--gt", "g", "--dataset", "thumos14"], "--pred is required"),
    ("asl_tf.cli.import_ckpt", "asl-import", ["--config_format", "xml"], "--config_format"),
    ("asl_tf.cli.demo", "asl-demo", ["--no_such_flag"], "no_such_flag"),
])
def test_flag_errors_one_line(module, prog, args, needle):
    _one_error_line(_run(module, *args, quiet=False), prog, needle)


def test_unwritable_outputs_one_line(tmp_path):
    p = _run("asl_tf.cli.data", "stats", "--annotations", THUMOS, "--format", "actionformer",
             "--json", UNWRITABLE)
    _one_error_line(p, "asl-data", "/proc/asl-no")
    gt_csv = tmp_path / "p.csv"
    gt_csv.write_text("video-id,t-start,t-end,label,score\n"
                      "video_test_0000004,1.0,2.0,0,0.9\n")
    p = _run("asl_tf.cli.eval", "--gt", THUMOS, "--pred", gt_csv, "--dataset", "thumos14",
             "--split", "test", "--json", "/proc/x.json")
    _one_error_line(p, "asl-eval", "/proc")
    p = _run("asl_tf.cli.train", "--config", REPO / "configs/demo.yaml", "--workdir",
             UNWRITABLE, quiet=False)
    _one_error_line(p, "asl-train", "/proc/asl-no")
    p = _run("asl_tf.cli.demo", "--workdir", UNWRITABLE, quiet=False)
    _one_error_line(p, "asl-demo", "/proc/asl-no")


def test_debug_shows_traceback_of_user_errors():
    p = _run("asl_tf.cli.eval", "--gt", "/nonexistent/gt.json", "--pred", "p.csv",
             "--dataset", "thumos14", "--debug")
    assert p.returncode not in (0, 2) and "Traceback" in p.stderr
    assert "gt.json" in p.stderr


def test_closed_stdout_pipe_is_quiet():
    cmd = [sys.executable, "-m", "asl_tf.cli.data", "stats", "--annotations", str(THUMOS),
           "--format", "actionformer"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader (`| head`) is gone before anything is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "BrokenPipeError" not in err and "Traceback" not in err, err
    assert proc.returncode != 0


@pytest.mark.slow  # starts the demo (TensorFlow, data generation) before the interrupt
def test_ctrl_c_exits_130_without_traceback(tmp_path):
    # asl-demo takes minutes; interrupt it once it is under way (its workdir exists)
    work = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "asl_tf.cli.demo", "--workdir", str(work)],
                            cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not work.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(2)
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def test_guard_keeps_traceback_of_bugs():
    from asl_tf.cli._common import guarded

    def buggy(argv):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        guarded(buggy, "asl-x")([])

    def attr_bug(argv):
        return None.shape  # AttributeError: a bug, not a user error

    with pytest.raises(AttributeError):
        guarded(attr_bug, "asl-x")([])


def test_guard_names_the_path_of_os_errors(capsys):
    from asl_tf.cli._common import guarded

    def disk_full(argv):
        raise OSError(28, "No space left on device", "/data/out.json")

    with pytest.raises(SystemExit) as exc:
        guarded(disk_full, "asl-x")([])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["asl-x: error: /data/out.json: No space left on device"]
