"""Shared plumbing of the absl command-line apps.

Rules: a CLI module defines its flags inside a `define_flags()` function (never at import
time, so several apps can be imported in one process), and its `run()` calls
`run_app(main, define_flags)`. Errors a user can cause (ValueError, FileNotFoundError,
UserError) print one line `prog: error: ...` on stderr and exit 2, without a traceback.
"""
import os
import sys

from absl import app

from asl_tf.errors import UserError  # noqa: F401  (re-exported: the CLIs raise it)


def _prog():
    return os.path.basename(sys.argv[0]) or "asl"


def guarded(main):
    """Wrap an absl `main(argv)` so user errors exit 2 with one line."""

    def _main(argv):
        try:
            return main(argv)
        except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                FileExistsError, KeyError) as err:  # user-caused: one line, exit 2
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
            print(f"{_prog()}: error: {msg}", file=sys.stderr)
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


def run_app(main, define_flags=None, argv=None):
    """Define the app's flags once, then run it under absl with the user-error guard.

    Flag names are accepted with `-` or `_` (`--seq-len` = `--seq_len`).
    """
    if define_flags is not None:
        define_flags()
    argv = dashes_to_underscores(list(sys.argv if argv is None else argv))
    app.run(guarded(main), argv=argv)
