"""User-facing errors: one line, naming the bad value and what is allowed."""


class LtbenchError(ValueError):
    """A mistake in the user's input. The CLI prints it as one line, without a traceback."""
