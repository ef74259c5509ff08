"""Live progress of a suite or a sweep, and the interrupts that stop it, as plain Python: no Ray.

A line per finished, stopped or failed trial, and a status line (done / running / failed /
pending, best so far) after each of those and at most every `STATUS_EVERY_S` seconds while
trials report. The Tune callback in `ltbench.runner.ray_adapter` only forwards Tune's events to
a `Progress`.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ltbench.runner.trials import format_point
from ltbench.schema import SEARCH_METRIC, trial_state

STATUS_EVERY_S = 30.0
BEST_LABELS = {"top1_error": "top-1 error", SEARCH_METRIC: "balanced validation error"}


def _print(text: str) -> None:
    print(text, flush=True)


def trial_name(key: str, point: dict[str, Any]) -> str:
    """A trial as the progress lines name it: its key, then the searched point if any."""
    return f"{key} ({format_point(point)})" if point else key


class Progress:
    """Counts trials and prints their progress; `best` ranks finished trials by `best_metric`.

    `describe(key)` names the best trial in the status line (default: the trial's name);
    `out_dir` is where a failed trial's error.txt is looked up.
    """

    def __init__(
        self,
        total: int,
        out_dir: str | Path,
        *,
        done: int = 0,
        best: tuple[float, str] | None = None,
        best_metric: str = "top1_error",
        describe: Callable[[str], str | None] | None = None,
        every: float = STATUS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] = _print,
    ):
        self.total, self.done, self.failed, self.best = total, done, 0, best
        self.out_dir = Path(out_dir)
        self.best_metric = best_metric
        self.best_label = BEST_LABELS.get(best_metric, best_metric)
        self.describe = describe
        self.every, self.clock, self.write = every, clock, write
        self.running: set[str] = set()
        self.last_status = clock()
        self.interrupted = False  # Ctrl-C or SIGTERM stopped the experiment
        # trials that Tune ended without error before any interrupt: finished, or stopped early
        # by the scheduler (a trial cut off by an interrupt is not among them)
        self.ended_keys: set[str] = set()

    # -- the text -----------------------------------------------------------------------------

    def status_line(self) -> str:
        pending = max(self.total - self.done - self.failed - len(self.running), 0)
        best = f"{self.best[0]:.2f}% ({self.best[1]})" if self.best else "-"
        return (
            f"trials: done {self.done} / running {len(self.running)} / failed {self.failed} / "
            f"pending {pending}; best {self.best_label} {best}"
        )

    def _count(self) -> str:
        return f"[{self.done + self.failed}/{self.total}]"

    def _status(self) -> None:
        self.write(self.status_line())
        self.last_status = self.clock()

    # -- events -------------------------------------------------------------------------------

    def begin(self) -> None:
        """The experiment starts: the period of the status line counts from now."""
        self.last_status = self.clock()

    def started(self, trial_id: str) -> None:
        self.running.add(trial_id)

    def reported(self) -> None:
        """A trial reported an epoch: print the status line if the period has passed."""
        if self.clock() - self.last_status >= self.every:
            self._status()

    def completed(
        self, trial_id: str, key: str | None, point: dict[str, Any], result: dict[str, Any]
    ) -> None:
        """A trial ended without error: it finished, or the scheduler stopped it early."""
        self.running.discard(trial_id)
        if key and not self.interrupted:
            self.ended_keys.add(key)
        self.done += 1
        name = trial_name(key or trial_id, point)
        err = result.get("top1_error")
        if result.get("finished") and err is not None:
            desc = (self.describe(key) if self.describe and key else None) or name
            score = result.get(self.best_metric)
            if score is not None and (self.best is None or score < self.best[0]):
                self.best = (score, desc)
            secs = result.get("wall_seconds")
            took = f" ({secs:.0f} s)" if secs is not None else ""
            val = result.get(SEARCH_METRIC)
            shown = f", balanced val error {val:.2f}%" if val is not None else ""
            self.write(f"{self._count()} finished {name}: top-1 error {err:.2f}%{shown}{took}")
        else:
            epochs = result.get("training_iteration", 0)
            val = result.get(SEARCH_METRIC)
            shown = f", balanced val error {val:.2f}%" if val is not None else ""
            self.write(f"{self._count()} stopped early {name} after {epochs} epoch(s){shown}")
        self._status()

    def errored(
        self,
        trial_id: str,
        key: str | None,
        point: dict[str, Any],
        error_text: Callable[[], str],
    ) -> None:
        """A trial failed: its error.txt says why, else the last line of `error_text()`."""
        self.running.discard(trial_id)
        self.failed += 1
        message = trial_state(self.out_dir, key)[2] if key else ""
        if not message:
            try:
                text = error_text() or ""
            except Exception:  # the message is a courtesy; never let it break the run
                text = ""
            lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
            message = lines[-1] if lines else "see the Ray logs"
        self.write(f"{self._count()} FAILED {trial_name(key or trial_id, point)}: {message}")
        self._status()

    def pack_ended(self, trial_id: str, keys: list[str]) -> None:
        """A pack (one Tune trial) ended: each of its trials finished or failed, as its folder
        says (`ltbench.runner.worker.run_pack`)."""
        from ltbench.runner.worker import final_metrics
        from ltbench.schema import FINISHED

        for key in keys:
            status, result, _ = trial_state(self.out_dir, key)
            if status == FINISHED:
                self.completed(trial_id, key, {}, final_metrics(result))
            else:
                self.errored(trial_id, key, {}, lambda: "")

    def ended(self) -> None:
        if self.clock() - self.last_status > 1.0:
            self._status()

    def watch_interrupts(self) -> None:
        """From now on a SIGINT (Ctrl-C, or SIGTERM turned into one) sets `interrupted`, then
        runs the handler in place (Tune's, which ends the experiment and saves its state)."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):
            self.interrupted = True
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C (Tune saves its state, we write the results); the
    SIGINT handler in place before is back afterwards (Tune leaves its own installed)."""
    if hasattr(signal, "SIGTERM") and threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
    else:
        yield
