"""Output folders: the check that a path can be one, and the lock that its one writer holds.

One process writes into a folder at a time: `ltbench train` into its --out, the driver of
`ltbench run` / `ltbench sweep` into DIR, each trial into DIR/trials/<key>, and the trial that
trains a shared stage 1 into its cache folder (the others wait for it). The lock is `filelock`'s
(`flock` on POSIX), so the operating system releases it when its holder dies: a killed run never
blocks the next one. Beside it a small file says who holds it, for the error message only:

    DIR/.ltbench.lock    the locked file (empty; it stays when the lock is released)
    DIR/.ltbench.pid     {"pid", "host", "command", "since"} of the holder, while it holds the lock

A process that holds a folder may enter it again (a run trains its own stage 1, a trial calls
`train` on its folder); another process, or another thread, gets `FolderBusy` at once, or waits
with `wait=True`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ltbench.errors import LtbenchError

LOCK_FILE = ".ltbench.lock"
OWNER_FILE = ".ltbench.pid"

_held: dict[tuple[int, str], int] = {}  # (thread, folder) -> depth, for re-entry
_guard = threading.Lock()


class FolderBusy(LtbenchError):
    """Another process writes into the folder."""


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """The absolute folder `path` if ltbench can create or write it; a one-line error if it is a
    file, lies under a file, or its nearest existing folder is not writable. Writes nothing."""
    given = Path(path).expanduser()
    folder = Path(os.path.abspath(given))
    if os.path.lexists(folder) and not folder.is_dir():
        raise LtbenchError(f"{flag} {given} is a file, not a folder; give a folder path")
    probe = folder
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise LtbenchError(
            f"{flag} {given}: {probe} is a file, so no folder can be made under it; "
            "give a folder path"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LtbenchError(
            f"{flag} {given}: cannot write in {probe} (read-only or no permission); "
            "give a writable folder"
        )
    return folder


def make_folder(folder: Path) -> None:
    """Create `folder` (and its parents); a folder the system will not create (under /proc or
    /sys, a full disk) is a one-line error naming it: nothing ran, nothing is kept."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise LtbenchError(
            f"cannot create the folder {folder} ({reason}); nothing was written: give a folder "
            "that can be created and written (--out)"
        ) from None


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet (deepest first)."""
    return [d for d in (folder, *folder.parents) if not os.path.lexists(d)]


def remove_if_unused(folder: Path, made: list[Path]) -> None:
    """After a command that created `made` (`missing_folders` before it) stopped: remove them
    again when `folder` holds nothing but its lock file (a refusal leaves no empty folder)."""
    if not made or not folder.is_dir() or {p.name for p in folder.iterdir()} - {LOCK_FILE}:
        return
    try:
        (folder / LOCK_FILE).unlink(missing_ok=True)
        for each in made:  # the folder, then the parents it needed, while they are empty
            each.rmdir()
    except OSError:
        pass  # not empty after all (another process wrote there), or not ours to remove


def holder(folder: str | Path) -> str:
    """Who holds `folder`'s lock, as text for a message ("PID 123 on host-a"), from its PID file."""
    try:
        info = json.loads((Path(folder) / OWNER_FILE).read_text())
        return f"PID {int(info['pid'])} on {info.get('host') or 'this host'}"
    except (OSError, ValueError, KeyError, TypeError):
        return "PID unknown"


def _write_owner(folder: Path) -> None:
    info = {
        "pid": os.getpid(),
        "host": platform.node(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500],
        "since": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    tmp = folder / f"{OWNER_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, folder / OWNER_FILE)


def _file_lock(path: Path) -> FileLock:
    try:  # filelock >= 4: never fall back to a marker file that a killed process would leave
        return FileLock(str(path), fallback_to_soft=False)
    except TypeError:
        return FileLock(str(path))


@contextmanager
def hold(folder: str | Path, *, wait: bool = False) -> Iterator[Path]:
    """Hold the lock of `folder` (created if missing) for the block; yields the folder.

    Busy: `FolderBusy` naming the folder and the holder's PID, or with `wait` block until the
    holder ends. The caller checks the path first (`check_out_dir`).
    """
    folder = Path(os.path.abspath(Path(folder).expanduser()))
    key = (threading.get_ident(), str(folder))
    with _guard:
        depth = _held.get(key, 0)
        if depth:
            _held[key] = depth + 1
    if depth:
        try:
            yield folder
        finally:
            with _guard:
                _held[key] -= 1
        return
    make_folder(folder)
    lock = _file_lock(folder / LOCK_FILE)
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        raise FolderBusy(
            f"{folder} is in use by another ltbench process ({holder(folder)}); wait for it "
            "to end or choose another --out"
        ) from None
    try:
        _write_owner(folder)
        with _guard:
            _held[key] = 1
        yield folder
    finally:
        with _guard:
            _held.pop(key, None)
        try:
            (folder / OWNER_FILE).unlink(missing_ok=True)
        except OSError:
            pass  # an unwritable folder: the file is information only
        lock.release()
