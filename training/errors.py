"""Errors that are the user's to fix (bad paths, empty folders, inconsistent data).

The CLI prints them as one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, reported without a traceback."""
