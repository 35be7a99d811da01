"""One writer per run folder: a lock that the operating system releases when its holder ends.

Two trainings writing into one run folder would interleave their logs and overwrite each other's
checkpoints, so `tinylm.train.train` holds the run folder's lock while it trains. It is two
files in the folder:

- ``lock``, the lock itself: `filelock.FileLock`, which is ``flock`` on Linux, macOS and WSL and
  ``LockFileEx`` on native Windows. Either is taken atomically and released by the operating
  system when the holding process exits or is killed, so a lock file left behind by a dead
  process is simply taken over. Linux and macOS keep the empty file after release (filelock
  leaves it, so that all waiters lock the same file); Windows deletes it. We never use
  `filelock.SoftFileLock` (``fallback_to_soft=False``: on a filesystem without ``flock``,
  locking fails instead): its lock is the file's existence, which nothing removes when the
  holder is killed, and it guesses from a PID whether the holder still lives (a PID from another
  host, or a reused one, fools it).
- ``lock.json``, who holds it (PID, host, start time, command), for the message a second run
  gets. It is a separate file because a Windows lock is mandatory: while the lock is held, no
  other process can read the locked part of ``lock``. The holder writes it after taking the lock,
  under a temporary name and then renamed, so readers see a whole record; it deletes it before
  letting go, so only a holder that died leaves one behind (naming the dead process).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import BaseFileLock, FileLock, Timeout

from tinylm.progress import progress_bar

LOCK_FILE = "lock"
HOLDER_FILE = "lock.json"
_held: set[Path] = set()  # the folders this process holds (a nested folder_lock passes)


class FolderLocked(RuntimeError):
    """Another process holds the folder's lock; the message names it and what to do."""


def holder(folder: str | os.PathLike) -> dict:
    """Who holds (or last held) the folder's lock: pid, host, since, command; {} if unknown."""
    try:
        return json.loads((Path(folder) / HOLDER_FILE).read_text(encoding="utf-8"))
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
    if folder in _held:  # this process holds it already
        yield
        return
    os_lock = _try_lock(folder)
    if os_lock is None and not wait:
        raise FolderLocked(_locked_message(folder))
    if os_lock is None:
        os_lock = _wait(folder, poll_s)
    _held.add(folder)
    try:
        yield
    finally:
        _held.discard(folder)
        _release(folder, os_lock)


def _try_lock(folder: Path) -> BaseFileLock | None:
    """Take the folder's lock now and record this process as its holder; None if it is taken."""
    os_lock = FileLock(folder / LOCK_FILE, fallback_to_soft=False)
    try:
        os_lock.acquire(blocking=False)
    except Timeout:
        return None
    _write_holder(folder)
    return os_lock


def _write_holder(folder: Path) -> None:
    """Write lock.json naming this process, atomically: readers see the old record or the new."""
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
    }
    partial = folder / f"{HOLDER_FILE}.{os.getpid()}.part"
    partial.write_text(json.dumps(me), encoding="utf-8")
    _retry_while_read(lambda: os.replace(partial, folder / HOLDER_FILE))


def _retry_while_read(change: Callable[[], object], tries: int = 100) -> None:
    """Rename or delete a file that another process may be reading, retrying for up to ~1 s.

    Windows refuses both while any process has the file open (Python opens files without
    FILE_SHARE_DELETE); `holder` keeps it open for a moment only.
    """
    for _ in range(tries - 1):
        try:
            change()
            return
        except PermissionError:
            time.sleep(0.01)
    change()


def _wait(folder: Path, poll_s: float) -> BaseFileLock:
    """Poll until the lock is free, showing how long this has waited; return the lock taken."""
    who = holder(folder)
    bar = progress_bar(
        desc=f"waiting for process {who.get('pid', '?')} to finish with {folder.name}", unit="s"
    )
    try:
        while (os_lock := _try_lock(folder)) is None:
            time.sleep(poll_s)
            bar.update(poll_s)
    finally:
        bar.close()
    return os_lock


def _release(folder: Path, os_lock: BaseFileLock) -> None:
    """Delete lock.json while still holding the lock, then let go."""
    try:
        _retry_while_read(lambda: (folder / HOLDER_FILE).unlink(missing_ok=True))
    finally:
        os_lock.release()


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
    stop = f"taskkill /PID {pid}" if sys.platform == "win32" else f"kill {pid}"
    return (
        f"{folder} is in use by {what}. Two runs in one folder would overwrite each other: "
        f"wait for it to finish, stop it ({stop}), or use another run_name."
    )
