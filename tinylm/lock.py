"""One writer per run folder: a lock file that the operating system releases when its holder ends.

Two trainings writing into one run folder would interleave their logs and overwrite each other's
checkpoints, so `tinylm.train.train` holds ``<run folder>/lock`` while it trains. The lock is
``flock`` on that file: taken atomically, released by the kernel when the holding process exits
or is killed, so a lock file left behind by a dead process is simply taken over (it is stale).
The file names its holder (PID, host, start time, command) for the message a second run gets.

Needs ``fcntl`` (Linux, macOS, WSL); on native Windows folders are not locked.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tinylm.progress import progress_bar

try:
    import fcntl
except ImportError:  # native Windows
    fcntl = None

LOCK_FILE = "lock"
_held: set[Path] = set()  # the folders this process holds (a nested folder_lock passes)


class FolderLocked(RuntimeError):
    """Another process holds the folder's lock; the message names it and what to do."""


def holder(folder: Path) -> dict:
    """Who holds (or last held) the folder's lock: pid, host, since, command; {} if unknown."""
    try:
        return json.loads((Path(folder) / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@contextmanager
def folder_lock(
    folder: str | os.PathLike, wait: bool = False, poll_s: float = 1.0
) -> Iterator[None]:
    """Hold the folder's lock (creating the folder) for the block; nesting in one process is fine.

    If another process holds it: raise FolderLocked naming that process, or with wait=True
    wait for it (with a progress bar) and then take the lock.
    """
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None or folder in _held:  # no flock here (native Windows), or held already
        yield
        return
    fd = _acquire(folder / LOCK_FILE)
    if fd is None and not wait:
        raise FolderLocked(_locked_message(folder))
    if fd is None:
        fd = _wait(folder, poll_s)
    _held.add(folder)
    try:
        yield
    finally:
        _held.discard(folder)
        _release(folder / LOCK_FILE, fd)


def _acquire(path: Path) -> int | None:
    """Lock `path` (creating it) and write who holds it; None if another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _is_still(path, fd):
            break
        os.close(fd)  # its holder deleted the file while we waited for it: take the new one
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(me).encode())
    return fd


def _is_still(path: Path, fd: int) -> bool:
    """True when `path` still names the file open as `fd` (not deleted or replaced)."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except FileNotFoundError:
        return False


def _wait(folder: Path, poll_s: float) -> int:
    """Poll until the lock is free, showing how long this has waited; return the lock's fd."""
    who = holder(folder)
    bar = progress_bar(
        desc=f"waiting for process {who.get('pid', '?')} to finish with {folder.name}", unit="s"
    )
    try:
        while (fd := _acquire(folder / LOCK_FILE)) is None:
            time.sleep(poll_s)
            bar.update(poll_s)
    finally:
        bar.close()
    return fd


def _release(path: Path, fd: int) -> None:
    """Delete the lock file while still holding it, then let go."""
    path.unlink(missing_ok=True)
    os.close(fd)


def _locked_message(folder: Path) -> str:
    """Which process holds the folder, and what to do about it."""
    who = holder(folder)
    pid = who.get("pid", "?")
    what = (
        f"process {pid} on {who.get('host', '?')} (since {who.get('since', '?')}: "
        f"{who.get('command', '?')})"
        if who
        else "another process"
    )
    return (
        f"{folder} is in use by {what}. Two runs in one folder would overwrite each other: "
        f"wait for it to finish, stop it (kill {pid}), or use another run_name."
    )
