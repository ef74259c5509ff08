"""User-facing errors: one line, naming the bad value and what is allowed."""

import re


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


MAX_MESSAGE = 2000  # characters of an error line; a longer one is cut in its middle


def one_line(exc: BaseException) -> str:
    """The message of an error as one line, at most MAX_MESSAGE characters (a value quoted in
    full could be megabytes: its middle is left out). An error raised in a DataLoader worker
    comes back with the worker's traceback in its text; its last line is the original message."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1 and "Traceback (most recent call last)" in text:
        prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
        line = lines[-1][len(prefix) :] if lines[-1].startswith(prefix) else lines[-1]
    else:
        line = " ".join(lines) or type(exc).__name__
    return shorten(line)


def shorten(text: str, most: int = MAX_MESSAGE) -> str:
    """`text` if it has at most `most` characters, else its start and end around a note."""
    if len(text) <= most:
        return text
    cut = len(text) - most + 40
    keep = (most - 40) // 2
    return f"{text[:keep]} [... {cut} characters left out ...] {text[-keep:]}"


MAX_VALUES = 100_000  # values a suite file or a -p value may hold, its YAML aliases expanded


def check_size(value, where: str, most: int = MAX_VALUES) -> None:
    """A one-line error if `value` (parsed YAML) holds more than `most` values once its aliases
    are expanded: a few hundred bytes of nested aliases can stand for billions of values, which
    any message quoting them, or any loop over them, would have to build."""
    seen, stack = 0, [value]
    while stack:
        item = stack.pop()
        seen += 1
        if seen > most:
            raise LtbenchError(
                f"{where}: more than {most} values once its YAML aliases (*name) are expanded; "
                "write the values out, or use fewer"
            )
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


_EXPONENT_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)[eE][+-]?\d+")


def yaml_value(key: str, text: str):
    """The value of `-p key=text`, read as YAML (0.5 a float, 120 an int, true a bool), and
    1e9, 1e+9, 1E-3 as numbers (YAML 1.1 reads them as text); one-line errors, at most
    MAX_VALUES values."""
    import yaml

    if _EXPONENT_NUMBER.fullmatch(text.strip()):
        return float(text)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise LtbenchError(
            f"{f'{key}={text}'[:200]!r}: the value is not valid YAML (quote it, e.g. "
            "-p 'name=\"text\"')"
        ) from None
    check_size(value, f"-p {key[:100]}")
    return value
