"""Exceptions shared by the engine."""


class BioidInputError(ValueError):
    """Bad user input: a file that cannot be read, a wrong shape, NaNs,
    coordinates outside the volume, an empty or unrecognisable table.

    The message always names the offending file or argument, and the engine
    raises it *before* writing anything.
    """


class Cancelled(RuntimeError):
    """Raised inside a long engine call when its cancel flag was set."""
