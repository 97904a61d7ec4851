"""The library's user-error type, shared by `asl_tf`, `export/` and every CLI.

A `UserError` says the user's input is wrong (a file, a field, a flag), names what is wrong,
and is printed by the CLIs as one line with exit status 2 and no traceback. It subclasses
`ValueError` so callers that catch `ValueError` keep working.
"""


class UserError(ValueError):
    """An error caused by the user's input (bad file, bad field, bad flag value)."""
