"""User-facing errors: one line, naming the bad value and what is allowed."""


class LtbenchError(ValueError):
    """A mistake in the user's input. The CLI prints it as one line, without a traceback."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a command; `hint` says how to continue (the CLI prints it)."""

    def __init__(self, hint: str = ""):
        super().__init__(hint)
        self.hint = hint


def os_error_message(exc: OSError, folder=None) -> str:
    """One line for a file that could not be read or written: the file and the reason; when it
    lies in the run's `folder`, that the run so far is kept there and can be resumed."""
    name = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or str(exc) or type(exc).__name__
    if folder is not None and str(name).startswith(str(folder)):
        return (
            f"cannot write {name}: {reason}; the run so far is kept in {folder}: continue it "
            "with --resume once the folder is writable"
        )
    return f"cannot access {name}: {reason}"


def one_line(exc: BaseException) -> str:
    """The message of an error as one line. An error raised in a DataLoader worker comes back
    with the worker's traceback in its text; its last line is the original message."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1 and "Traceback (most recent call last)" in text:
        prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
        return lines[-1][len(prefix) :] if lines[-1].startswith(prefix) else lines[-1]
    return " ".join(lines) or type(exc).__name__
