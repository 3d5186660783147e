"""User-facing errors: one line that names the offending field, model, dataset or file."""


class PrhError(Exception):
    """A user mistake or a bad input; the CLI prints ``str(error)`` on one line, without a traceback."""
