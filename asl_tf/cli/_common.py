"""Shared plumbing of the absl command-line apps: one error path for every CLI.

Rules: a CLI module defines its flags inside a `define_flags()` function (never at import
time, so several apps can be imported in one process), and its `run()` calls
`run_app(main, define_flags)`. Then:

- `--help` / `-h` print the module's docstring and the app's flags on stdout, exit 0;
- a flag error (unknown flag, bad enum value, missing required flag) prints one line
  `prog: error: ...` on stderr and exits 2 (absl's "FATAL Flags parsing error" never shows);
- an error the user caused (`UserError`/`ValueError`, a missing or unreadable/unwritable
  path, a full disk) prints one line `prog: error: ...` and exits 2, without a traceback;
  `--debug` re-raises it with its traceback;
- Ctrl-C exits 130 with one line, no traceback; a closed pipe (`asl-data ... | head`)
  exits quietly;
- anything else is a bug and shows its traceback.

TensorFlow's native start-up lines (oneDNN, CUDA stubs, cuInit, CPU features) are dropped
from stderr unless the user set `TF_CPP_MIN_LOG_LEVEL` or passed `--debug`.
"""
import errno
import os
import re
import sys
import threading

from absl import app, flags

from asl_tf.errors import UserError  # noqa: F401  (re-exported: the CLIs raise it)

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               FileExistsError, PermissionError, KeyError)
# OSError numbers that mean the user's path or disk, not our code.
USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
               errno.EFBIG, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
               errno.ENAMETOOLONG, errno.ELOOP, errno.EXDEV}
_NATIVE_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations|cudart_stub|"
    r"cpu_feature_guard|To enable the following instructions|failed call to cuInit|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|"
    r"TF-TRT Warning|oneDNN supports DT_|could not open file to read NUMA node|Could not find cuda drivers")


def prog_name(argv=None):
    argv = sys.argv if argv is None else argv
    name = os.path.basename(argv[0]) if argv else ""
    if name in ("", "__main__.py", "-c", "-m") or name.endswith(".py"):
        return "asl"
    return name


def user_error_text(err):
    """One line for a user error, or None if `err` is not one (a bug)."""
    if isinstance(err, KeyError):
        return str(err.args[0]) if err.args else "missing key"
    if isinstance(err, OSError):
        if err.errno not in USER_ERRNOS and not isinstance(err, USER_ERRORS):
            return None
        text = err.strerror or str(err)
        name = err.filename
        if name is not None and _is_temp_name(str(name)):  # a temp file beside the output
            name = f"cannot write in {os.path.dirname(str(name)) or '.'}"
        if name is not None and str(name) not in text:
            text = f"{name}: {text}"
        return text if text else str(err)
    if isinstance(err, USER_ERRORS):
        return " ".join(str(err).split("\n")[:1]) if str(err) else type(err).__name__
    return None


def _is_temp_name(path):
    base = os.path.basename(path)
    return base.startswith(".") and ("tmp" in base or base.endswith(".part"))


def _silence_broken_pipe():
    """stdout went away (`| head`): point it at /dev/null so the exit flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def guarded(main, prog=None, debug=lambda: False):
    """Wrap an absl `main(argv)`: user errors exit 2 with one line; Ctrl-C exits 130."""

    def _main(argv):
        name = prog or prog_name()
        try:
            code = main(argv)
            sys.stdout.flush()
            return code
        except KeyboardInterrupt:
            print(f"{name}: interrupted", file=sys.stderr)
            sys.exit(130)
        except BrokenPipeError:
            _silence_broken_pipe()
            sys.exit(141)
        except Exception as err:  # noqa: BLE001  (classified below; bugs re-raise)
            text = user_error_text(err)
            if text is None or debug():
                raise
            print(f"{name}: error: {text}", file=sys.stderr)
            sys.exit(2)

    return _main


def dashes_to_underscores(argv):
    """`--video-info X` -> `--video_info X`: absl flag names use underscores, the docs may not."""
    out, done = [], False
    for a in argv:
        if a == "--":
            done = True
        elif not done and a.startswith("--") and len(a) > 2:
            name, eq, value = a[2:].partition("=")
            a = "--" + name.replace("-", "_") + eq + value
        out.append(a)
    return out


def _flag_line(flag):
    kind = ""
    values = getattr(flag.parser, "enum_values", None)
    if values:
        kind = " <" + "|".join(values) + ">"
    text = f"  --{flag.name}{kind}: {flag.help}"
    if isinstance(flag.default, bool):
        text += f" (default: on; --no{flag.name} turns it off)" if flag.default else ""
    elif flag.default not in (None, "", []):
        text += f" (default: {flag.default})"
    return text


def help_text(doc, app_flags):
    lines = [(doc or "").strip(), "", "flags:"]
    lines += [_flag_line(f) for f in app_flags]
    return "\n".join(lines) + "\n"


def _wants_help(argv):
    for a in argv[1:]:
        if a == "--":
            return False
        if a in ("-h", "--help", "--helpshort", "--helpfull", "-?"):
            return True
    return False


class _NativeStderrFilter:
    """Route fd 2 (native code: TensorFlow's C++ logging) through a thread that drops
    TensorFlow's start-up lines; Python's `sys.stderr` keeps writing to the real stderr."""

    def __init__(self):
        self.real = os.dup(2)
        sys.stderr.flush()
        sys.stderr = os.fdopen(os.dup(self.real), "w", buffering=1, encoding="utf-8",
                               errors="backslashreplace")
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(target=self._pump, args=(read,), daemon=True)
        self.thread.start()

    def _pump(self, read):
        with os.fdopen(read, "rb") as pipe:
            for line in pipe:
                if not _NATIVE_NOISE.search(line.decode("utf-8", "replace")):
                    os.write(self.real, line)


def _quiet_native(debug):
    if debug or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
        _NativeStderrFilter()
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded): leave as is
        pass


def run_app(main, define_flags=None, argv=None, doc=None):
    """Define the app's flags once, then run it under absl with the user-error guard.

    Flag names are accepted with `-` or `_` (`--seq-len` = `--seq_len`). `doc` defaults to
    the docstring of `main`'s module (the help text before the flag list).
    """
    FLAGS = flags.FLAGS
    before = set(FLAGS)
    if define_flags is not None:
        define_flags()
    if "debug" not in FLAGS:
        flags.DEFINE_boolean("debug", False, "Show the traceback of user errors too.")
    app_flags = [FLAGS[n] for n in FLAGS if n not in before]
    argv = dashes_to_underscores(list(sys.argv if argv is None else argv))
    if doc is None:
        doc = getattr(sys.modules.get(main.__module__), "__doc__", "") or ""
    prog = prog_name(argv)
    named = re.match(r"\W*(asl-[a-z-]+)", doc)
    if prog == "asl" and named:
        prog = named.group(1)
    if _wants_help(argv):
        sys.stdout.write(help_text(doc, app_flags))
        sys.exit(0)

    def parse(args):
        try:
            return FLAGS(args)
        except flags.Error as err:
            text = str(err).replace("FATAL Flags parsing error: ", "").splitlines()[0]
            required = re.search(r"Flag --(\w+) must have a value other than None", text)
            if required:
                text = f"--{required.group(1)} is required"
            print(f"{prog}: error: {text} (see {prog} --help)", file=sys.stderr)
            sys.exit(2)

    debug = "--debug" in argv
    _quiet_native(debug)
    app.run(guarded(main, prog, debug=lambda: bool(FLAGS["debug"].value)), argv=argv,
            flags_parser=parse)
