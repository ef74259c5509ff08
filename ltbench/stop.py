"""How the `ltbench` command stops: SIGTERM and SIGHUP as Ctrl-C, a reader of stdout gone away.

`ltbench.cli.main` installs these; the run of a suite keeps its own SIGTERM handling while Ray
Tune runs (`ltbench.runner.progress.sigterm_as_interrupt`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

stopped_by: list[str] = []  # the signal that stopped the command, if one did


def _stop_on_signal(signum, frame) -> None:
    stopped_by.append(signal.Signals(signum).name)
    raise KeyboardInterrupt


def signals_as_interrupt() -> dict:
    """SIGTERM and SIGHUP (a scheduler's stop, a closed terminal) stop a command as Ctrl-C does:
    its cleanup runs, the lock's PID file goes, the same message (naming the signal) and exit
    status 130. Only where they have their default action (`nohup` keeps SIGHUP ignored), in the
    main thread. Returns the handlers replaced, for the caller to put back."""
    replaced: dict = {}
    if threading.current_thread() is not threading.main_thread():
        return replaced
    stopped_by.clear()
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
            replaced[sig] = signal.signal(sig, _stop_on_signal)
    return replaced


def quiet_broken_pipe() -> int:
    """The reader of stdout went away (`ltbench list | head -3`): stop quietly, exit 0."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush goes nowhere
    except (OSError, ValueError):
        pass
    return 0


def restore(replaced: dict) -> None:
    """Put back the handlers `signals_as_interrupt` replaced."""
    for sig, previous in replaced.items():
        signal.signal(sig, previous)
