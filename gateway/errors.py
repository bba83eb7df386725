"""Errors that end a ``knute`` command with one clear line and exit status 2."""


class KnuteError(Exception):
    """A failure the user can act on; its message is printed as one line on stderr."""
