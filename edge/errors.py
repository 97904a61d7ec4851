"""User errors of `asl-edge`: which exceptions are the user's (one line, exit 2) and which are
bugs (traceback). A copy of the rule of asl_tf/cli/_common.py (edge/ must not import asl_tf)."""
import errno
import os
import zipfile

# OSError numbers that mean the user's path or disk (a copy of asl_tf/cli/_common.py's list).
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
                errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}


def user_error_text(err):
    """One line for a user error, or None for a bug (which keeps its traceback)."""
    if isinstance(err, OSError):
        if err.errno not in _USER_ERRNOS and not isinstance(
                err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
            return None
        text = err.strerror or str(err)
        name = err.filename
        if name is not None and os.path.basename(str(name)).startswith("."):
            name = f"cannot write in {os.path.dirname(str(name)) or '.'}"  # our temp file
        return f"{name}: {text}" if name is not None and str(name) not in text else str(err)
    if isinstance(err, (ValueError, zipfile.BadZipFile)):
        return str(err).split("\n")[0]
    return None
