"""Atomic file output for the library: nothing is ever left half-written.

`atomic_write(path)` yields a file object on a temp file beside `path`; on a clean exit the
temp file gets the mode an ordinary `open(path, "w")` would give (0666 less the umask) and is
renamed over `path`; on any exception (including KeyboardInterrupt) it is removed and
`path` is left as it was. `atomic_path(path)` yields the temp *path* for writers that take a
file name (Keras `save`, `np.save` to a name, h5py).
"""
import contextlib
import errno
import os
import tempfile

from asl_tf.errors import UserError

# Write failures that are the user's disk or path, not our code: reported naming the output.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def _umask_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path, suffix=".part"):
    """Yield a temp path in `path`'s folder; rename it over `path` when the block succeeds."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    base = os.path.basename(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=suffix, dir=folder)
    except OSError as err:
        raise UserError(f"{path}: cannot write here ({err.strerror or err})") from err
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
            raise UserError(f"{path}: write failed ({err.strerror or err}); "
                            "nothing was written") from err
        raise


@contextlib.contextmanager
def atomic_write(path, mode="w", encoding="utf-8"):
    """`with atomic_write(p) as f: f.write(...)`: `p` appears complete or not at all."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        kwargs = {} if mode == "wb" else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as f:
            yield f
