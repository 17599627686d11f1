"""Errors users see: one clear line, naming file, line, layer and field where they apply."""


class NetkitError(Exception):
    """A user-facing error; the CLI prints it as one line and exits non-zero."""
