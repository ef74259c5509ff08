"""Ray processes that a killed driver left behind: recorded when ltbench starts its own Ray,
found and ended by the next driver of the same folder. Ray-free; Linux (`/proc`), a no-op
elsewhere.

When `ltbench run` or `ltbench sweep` starts Ray on this machine (never when it joins a
cluster), it writes `DIR/ray_session.json`: its PID and start time, the host, Ray's session
folder (`/tmp/ray/session_<date>_<pid>`) and the processes it has started so far. A clean exit
removes the file. After `kill -9` of the driver the file stays, and so do some of Ray's
processes (its dashboard and runtime-env agents outlive the raylet). The next `run` or `sweep`
into DIR ends them, once the recorded driver is dead: the processes of this user that belong to
that session --
their command line or one of their open files names the session folder, or they are a recorded
process (same PID and start time). Another session's processes (a cluster started with
`ray start`, another run's Ray) and other users' processes are never touched.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import time
from pathlib import Path

SESSION_FILE = "ray_session.json"
PROC = Path("/proc")
TERM_WAIT_S = 5.0


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, None if it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields[0], int(fields[19])


def _alive(pid: int, start: int | None = None) -> bool:
    """The process exists, is not a zombie and (if given) started at `start`."""
    st = _stat(pid)
    return st is not None and st[0] != "Z" and (start is None or st[1] == start)


def _mine(pid: int) -> bool:
    try:
        return (PROC / str(pid)).stat().st_uid == os.getuid()
    except OSError:
        return False


def _names_session(pid: int, session_dir: str) -> bool:
    """The command line, or a file the process holds open, names the session folder."""
    base = PROC / str(pid)
    try:
        if session_dir in (base / "cmdline").read_bytes().decode(errors="replace"):
            return True
        for fd in (base / "fd").iterdir():
            try:
                if os.readlink(fd).startswith(session_dir):
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


def _descendants(pid: int) -> list[int]:
    parent: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
                parent[int(entry.name)] = int(text.rsplit(")", 1)[-1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


def _valid_session(session_dir) -> bool:
    return isinstance(session_dir, str) and Path(session_dir).name.startswith("session_")


def record(out_dir: str | Path, session_dir: str | None) -> None:
    """Write DIR/ray_session.json for the Ray this driver just started (Linux only)."""
    if not PROC.is_dir() or not _valid_session(session_dir):
        return
    me = os.getpid()
    st = _stat(me)
    kids = [{"pid": p, "start": s[1]} for p in _descendants(me) if (s := _stat(p)) is not None]
    data = {
        "driver_pid": me,
        "driver_start": st[1] if st else None,
        "host": platform.node(),
        "session_dir": session_dir,
        "processes": kids,
    }
    path = Path(out_dir) / SESSION_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def forget(out_dir: str | Path) -> None:
    """The driver shut its Ray down: remove DIR/ray_session.json."""
    (Path(out_dir) / SESSION_FILE).unlink(missing_ok=True)


def end_orphans(out_dir: str | Path) -> tuple[int | None, list[int]]:
    """End the Ray processes that a dead driver of DIR left (see the module docstring).

    Returns (the dead driver's PID, the PIDs ended); (None, []) when there was nothing to do,
    or the recorded driver still runs (PID and start time: never a PID reused by another).
    """
    path = Path(out_dir) / SESSION_FILE
    if not path.is_file():
        return None, []
    try:
        data = json.loads(path.read_text())
        driver, session = int(data["driver_pid"]), data["session_dir"]
        driver_start = data.get("driver_start")
        listed = [(int(p["pid"]), p.get("start")) for p in data.get("processes", [])]
    except (OSError, ValueError, KeyError, TypeError):  # not ours to act on: drop it
        path.unlink(missing_ok=True)
        return None, []
    if not PROC.is_dir() or data.get("host") != platform.node() or not _valid_session(session):
        return None, []  # processes on another host: not ours to see
    if _alive(driver, driver_start):
        return None, []  # a live driver (of another folder's lock?): leave its Ray alone
    recorded = {pid for pid, start in listed if start is not None and _alive(pid, start)}
    me = os.getpid()
    targets = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        if _mine(pid) and _alive(pid) and (pid in recorded or _names_session(pid, session)):
            targets.append(pid)
    _terminate(targets)
    path.unlink(missing_ok=True)
    return driver, targets


def _terminate(pids: list[int]) -> None:
    """SIGTERM, up to TERM_WAIT_S for them to end, then SIGKILL for the rest."""
    starts = {p: s[1] for p in pids if (s := _stat(p)) is not None}
    for sig, wait in ((signal.SIGTERM, TERM_WAIT_S), (signal.SIGKILL, 2.0)):
        left = [p for p, s in starts.items() if _alive(p, s)]
        for p in left:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while any(_alive(p, starts[p]) for p in left) and time.monotonic() < deadline:
            time.sleep(0.1)
