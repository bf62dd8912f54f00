"""The run folder's exclusive lock: one writer per folder for the life of a run.

:func:`run_lock` takes an ``fcntl.flock`` on ``<run>/.cadx.lock`` (the kernel drops it when the holder dies, even by
``kill -9``) and writes the holder's pid, host and start time into that file; it is reentrant within a process, so
``start_run`` and the run kind around it share one lock. A second writer gets :class:`CadxRunLockedError`, one line
naming the holder. A lock file that still names a holder while the flock is free was left by a killed process: it is
taken over, and a line on stderr (and ``<run>/lock_takeovers.log``) says so.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import psutil

from cadx.errors import CadxError

LOCK_NAME = ".cadx.lock"
P = ParamSpec("P")
R = TypeVar("R")
_held: dict[str, tuple[int, int]] = {}  # resolved lock path -> (fd, depth) of the locks this process holds


class CadxRunLockedError(CadxError):
    """The run folder is being written by another live cadx process."""


def _holder(text: str) -> dict[str, Any]:
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "pid unknown (the holder is still starting)"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('started', '?')}"


def _alive(info: dict[str, Any]) -> bool:
    """True when ``info`` names a process that may still run: another host's, or a live pid on this host."""
    if info.get("host") != socket.gethostname():
        return True
    try:
        return psutil.pid_exists(int(info.get("pid", -1))) and int(info["pid"]) != os.getpid()
    except (TypeError, ValueError):
        return False


def read_holder(run_dir: str | Path) -> dict[str, Any]:
    """The holder recorded in ``run_dir``'s lock file (``{}`` when none)."""
    try:
        return _holder((Path(run_dir) / LOCK_NAME).read_text())
    except OSError:
        return {}


def _acquire(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        info = read_holder(path.parent)
        os.close(fd)
        raise CadxRunLockedError(f"{path.parent}: in use by another cadx run: {_describe(info)} (lock {path}); "
                                 "wait for it to finish or use another folder") from None
    try:
        previous = _holder(os.pread(fd, 65536, 0).decode("utf-8", "replace"))
        if previous and _alive(previous):  # flock free yet a live holder: a filesystem without flock; stay out
            raise CadxRunLockedError(f"{path.parent}: in use by another cadx run: {_describe(previous)} (lock "
                                     f"{path}; delete it if that process is not a cadx run)")
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        data = json.dumps(me).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    except BaseException:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise
    if previous:
        line = (f"{path.parent}: took over a stale lock of {_describe(previous)} (that process is no longer "
                f"running)")
        print(f"note: {line}", file=sys.stderr)
        with open(path.parent / "lock_takeovers.log", "a", encoding="utf-8") as fh:
            fh.write(f"{me['started']} pid {me['pid']}: {line}\n")
    return fd


def _release(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)  # an empty lock file = released cleanly (a non-empty one without a flock = stale)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold ``run_dir``'s exclusive lock inside the ``with`` block (creating the folder); reentrant within the
    process. Raises :class:`CadxRunLockedError` (one line: the holder's pid, host, start time) when another live
    process holds it. Yields the folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = str((run_dir / LOCK_NAME).resolve())
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
    else:
        _held[key] = (_acquire(Path(key)), 1)
    try:
        yield run_dir
    finally:
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
        else:
            del _held[key]
            _release(fd)


def holds_lock(run_dir: str | Path) -> bool:
    """True when this process holds ``run_dir``'s lock."""
    return str((Path(run_dir) / LOCK_NAME).resolve()) in _held


def locks_run_folder(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a run kind ``fn(cfg, out_dir, ...)`` (or ``train_final``): it runs holding ``out_dir``'s
    :func:`run_lock`, released when it returns or raises."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        out_dir = kwargs["out_dir"] if "out_dir" in kwargs else args[1]
        with run_lock(out_dir):  # type: ignore[arg-type]
            return fn(*args, **kwargs)

    return wrapper
