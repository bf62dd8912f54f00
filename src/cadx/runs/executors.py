"""Where the tasks of a run execute: the folds of :func:`cadx.runs.folder.run_folds` (and the variants of a study).

Two executors share one interface, :meth:`Executor.map` (``fn(*args)`` for each argument tuple, yielding
``(index, result)`` as each task finishes):

- :class:`SerialExecutor` (the default): in this process, one after another, in order. Exactly the loop cadx
  always ran.
- :class:`RayExecutor`: each call is a Ray task with ``num_cpus = cpus_per_task`` that sets
  ``torch.set_num_threads(cpus_per_task)`` and the driver's working directory before it runs. Local Ray by default
  (``ray.init(num_cpus=<this machine's CPUs>, include_dashboard=False, log_to_driver=False)``, shut down again on
  :meth:`RayExecutor.close`); ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``) joins a running cluster
  instead. ``fn`` (with whatever it closes over: a run's cohort and ItemStore) is serialised ONCE with
  ``ray.put`` and every task reads that object (Ray's shared object store), so a big store is not pickled again
  per task. A rich progress bar counts finished tasks on stderr.

:meth:`Executor.start` begins whatever an executor needs before its first task, without waiting for it: for Ray,
``ray.init`` and one warm-up task per CPU slot that imports torch and cadx's run modules into the worker
processes (a fresh worker otherwise pays those imports inside the first fold: 3-4 s idle, 20 s under load), all
on a background thread while the driver loads the cohort, checks it and builds the item store.
:func:`cadx.runs.cv.run_cv` calls it first; :meth:`map` waits for it (and re-raises its error).

The run folder's lock (:mod:`cadx.runs.lock`) stays with the driver: a fold task only writes its own
``fold_<k>/``, and the driver assembles the pooled files from the returned rows exactly as the serial loop does.
A task that raises cancels the tasks still pending and re-raises the task's own exception in the driver (a
:class:`~cadx.errors.CadxError` keeps its one-line message); the folds already ``DONE`` stay, so ``--resume``
continues. Ray is an optional dependency, imported only when a :class:`RayExecutor` starts.

Same seed ⇒ same result: a fold is a pure function of the config, its fold number and its seed
(:func:`cadx.training.trainer.fold_seed`), not of the process it runs in, so serial and Ray runs write the same
predictions (``tests/test_executors.py``); only the thread count can move the last float bits, which is why both
use ``cpus_per_task`` threads per fold.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cadx.errors import CadxConfigError, CadxError

__all__ = ["EXECUTORS", "WARM_MODULES", "Executor", "RayExecutor", "SerialExecutor", "make_executor", "run_task",
           "warm_up"]

R = TypeVar("R")
EXECUTORS = ("serial", "ray")
_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+)$")


@runtime_checkable
class Executor(Protocol):
    """Runs independent calls; ``name`` is ``serial`` or ``ray``."""

    name: str

    def map(self, fn: Callable[..., R], calls: Sequence[tuple[Any, ...]], labels: Sequence[str] | None = None,
            cpus: float | None = None, description: str = "tasks") -> Iterator[tuple[int, R]]:
        """``fn(*calls[i])`` for every ``i``; yields ``(i, result)`` as each finishes (any order). ``labels`` name
        the calls in the progress bar; ``cpus`` overrides the CPUs reserved per call (``0`` = a coordinator that
        only waits on tasks of its own)."""
        ...

    def nested(self) -> Executor:
        """The executor a task of this one should use for tasks of its own (a study variant's folds)."""
        ...

    def start(self, modules: Sequence[str] = ()) -> None:
        """Begin what the first task needs (Ray: start or connect, warm the workers, importing
        :data:`WARM_MODULES` and ``modules``) without waiting; idempotent. Errors surface from the next
        :meth:`map`."""
        ...

    def close(self) -> None:
        """Release what the executor started (a local Ray instance); idempotent."""
        ...


@dataclass
class SerialExecutor:
    """In this process, in order: ``fn(*calls[0])``, ``fn(*calls[1])``, ... (the first exception propagates)."""

    name: str = "serial"

    def map(self, fn: Callable[..., R], calls: Sequence[tuple[Any, ...]], labels: Sequence[str] | None = None,
            cpus: float | None = None, description: str = "tasks") -> Iterator[tuple[int, R]]:
        for i, args in enumerate(calls):
            yield i, fn(*args)

    def nested(self) -> Executor:
        return self

    def start(self, modules: Sequence[str] = ()) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_task(fn: Callable[..., R], args: tuple[Any, ...], threads: int, cwd: str) -> R:
    """The body of every Ray task: ``threads`` torch threads, the driver's working directory ``cwd`` when this
    machine has it (relative run folders and data roots then mean the same files: the shared-filesystem
    requirement of ``docs/ray.md``), then ``fn(*args)``."""
    torch.set_num_threads(max(1, int(threads)))
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return fn(*args)


#: What a fold task imports (its ``fn`` unpickles into these modules); the warm-up tasks import them first.
WARM_MODULES = ("torch", "cadx.runs.cv", "cadx.models.catalog", "cadx.evaluation.metrics")


def warm_up(modules: Sequence[str] = WARM_MODULES) -> int:
    """Import ``modules`` in this (worker) process; returns its pid. A missing module is skipped (warm-up only
    saves time, it never decides anything)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    return os.getpid()


def local_cpus() -> int:
    """CPUs this process may use (``sched_getaffinity``; ``os.cpu_count()`` where that is missing)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class RayExecutor:
    """Ray tasks (see the module docstring). ``address``: ``None`` = start a local Ray with ``num_cpus`` CPUs
    (default :func:`local_cpus`); ``"auto"`` / ``"HOST:PORT"`` / ``"ray://HOST:PORT"`` = connect to a cluster.
    ``cpus_per_task``: CPUs Ray reserves for each task and the torch threads it uses. ``progress``: the rich bar
    on stderr. Ray starts on the first :meth:`map` (an instance already running in this process, e.g. inside a
    task, is used as it is and never shut down by this executor)."""

    address: str | None = None
    cpus_per_task: int = 1
    num_cpus: int | None = None
    progress: bool = True
    name: str = "ray"
    #: seconds from :meth:`start` until Ray ran and every warm-up task finished (None until then)
    start_seconds: float | None = field(default=None, repr=False, compare=False)
    _started: bool = field(default=False, repr=False, compare=False)
    _starter: threading.Thread | None = field(default=None, repr=False, compare=False)
    _start_error: BaseException | None = field(default=None, repr=False, compare=False)
    _warm_refs: list[Any] = field(default_factory=list, repr=False, compare=False)
    _start_done: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    _hold: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def __post_init__(self) -> None:
        if int(self.cpus_per_task) < 1:
            raise CadxConfigError(f"--cpus-per-task: must be at least 1, got {self.cpus_per_task}")
        if self.address is not None and not _ADDRESS.match(self.address):
            raise CadxConfigError(f"--address: {self.address!r} is not 'auto', HOST:PORT or ray://HOST:PORT")
        if self.address is None and self.num_cpus is not None and self.num_cpus < self.cpus_per_task:
            raise CadxConfigError(f"--cpus-per-task {self.cpus_per_task} exceeds the {self.num_cpus} CPUs of the "
                                  "local Ray instance")

    def __getstate__(self) -> dict[str, Any]:  # a copy sent to a task never owns the driver's Ray instance
        return {k: v for k, v in self.__dict__.items() if k not in _RUNTIME}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _started=False, _starter=None, _start_error=None, _warm_refs=[],
                             _start_done=threading.Event(), _hold=threading.Event())

    def _ray(self) -> Any:
        import ray  # optional dependency: ray (only --executor ray needs it)

        if ray.is_initialized():
            return ray
        try:
            if self.address is None:
                n = int(self.num_cpus or local_cpus())
                if n < self.cpus_per_task:
                    raise CadxConfigError(f"--cpus-per-task {self.cpus_per_task} exceeds this machine's {n} CPUs")
                ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            else:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.ERROR)
        except CadxError:
            raise
        except Exception as err:  # ConnectionError, a timeout, a version mismatch with the cluster ...
            where = self.address or "a local Ray instance"
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise CadxConfigError(f"--address {where}: Ray did not start or connect ({type(err).__name__}: "
                                  f"{first[:200]})") from None
        self._started = True
        total = float(ray.cluster_resources().get("CPU", 0.0))
        if total < self.cpus_per_task:
            self.close()
            raise CadxConfigError(f"--cpus-per-task {self.cpus_per_task}: the Ray cluster has only {total:g} CPUs")
        return ray

    def start(self, modules: Sequence[str] = ()) -> None:
        """Start (or connect to) Ray and warm one worker per CPU slot (:func:`warm_up` of :data:`WARM_MODULES` +
        ``modules``) on a background thread; returns at once. Idempotent; :meth:`map` waits for it.

        The thread stays alive (idle) until :meth:`close`: Ray's local processes are started with the parent-death
        signal, which Linux sends when the *thread* that started them exits, so it must outlive them."""
        if self._starter is not None:
            return
        names = (*WARM_MODULES, *modules)
        self._start_done.clear()
        self._hold.clear()

        t0 = time.perf_counter()

        def body() -> None:
            try:
                ray = self._ray()
                slots = max(1, int(float(ray.available_resources().get("CPU", 0.0)) // self.cpus_per_task))
                task = ray.remote(warm_up).options(num_cpus=self.cpus_per_task, max_retries=0)
                self._warm_refs = [task.remote(names) for _ in range(slots)]
            except BaseException as err:  # re-raised by _ready() in the caller's thread
                self._start_error = err
            finally:
                self._start_done.set()  # map() may submit now; its tasks queue behind the warm-ups
            if self._start_error is None:
                try:
                    ray.get(self._warm_refs)
                    self.start_seconds = round(time.perf_counter() - t0, 2)
                except Exception:  # a warm-up only saves time; the folds report their own errors
                    pass
            self._hold.wait()  # until close() has shut Ray down

        self._starter = threading.Thread(target=body, name="cadx-ray-start", daemon=True)
        self._starter.start()

    def _ready(self) -> Any:
        """The started Ray module (starting it now, in this thread, when :meth:`start` was not called); a failed
        start's error is raised again on every call until :meth:`close`."""
        if self._starter is None:
            return self._ray()
        self._start_done.wait()
        if self._start_error is not None:
            raise self._start_error
        return self._ray()

    def map(self, fn: Callable[..., R], calls: Sequence[tuple[Any, ...]], labels: Sequence[str] | None = None,
            cpus: float | None = None, description: str = "tasks") -> Iterator[tuple[int, R]]:
        if not calls:
            return
        ray = self._ready()
        names = list(labels) if labels is not None else [str(i) for i in range(len(calls))]
        task = ray.remote(run_task).options(num_cpus=self.cpus_per_task if cpus is None else cpus,
                                            max_retries=0)
        fn_ref = ray.put(fn)  # serialised once; each task reads it from the object store
        cwd = os.getcwd()
        refs = [task.remote(fn_ref, tuple(args), self.cpus_per_task, cwd) for args in calls]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        console = Console(stderr=True)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[last]}"), console=console, disable=not self.progress,
                      transient=False) as bar:
            each = f"{self.cpus_per_task} CPU each" if cpus is None else f"{cpus:g} CPU each"
            tid = bar.add_task(f"{description} (ray, {each})", total=len(refs), last="")
            try:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    i = index[done[0]]
                    result = _get(ray, done[0], names[i])
                    bar.update(tid, advance=1, last=f"finished {names[i]}")
                    yield i, result
            except BaseException:
                for ref in pending:  # stop the rest; finished tasks keep their DONE folders (resumable)
                    ray.cancel(ref, force=True)
                raise

    def nested(self) -> Executor:
        return RayExecutor(address=None, cpus_per_task=self.cpus_per_task, progress=False)

    def close(self) -> None:
        if self._starter is not None:
            self._start_done.wait()
        if self._started:
            import ray  # optional dependency: ray (only --executor ray needs it)

            ray.shutdown()
            self._started = False
        if self._starter is not None:  # Ray is down: the starter thread may end now
            self._hold.set()
            self._starter.join()
            self._starter, self._start_error, self._warm_refs = None, None, []

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: RayExecutor fields that belong to the process that started Ray (never pickled into a task).
_RUNTIME = frozenset({"_started", "_starter", "_start_error", "_warm_refs", "_start_done", "_hold"})


def _get(ray: Any, ref: Any, label: str) -> Any:
    """``ray.get(ref)``, re-raising a failed task's own exception (its remote traceback as a note unless it is a
    one-line :class:`CadxError`)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException):
            if not isinstance(cause, CadxError):
                cause.add_note(f"(in Ray task {label}; remote traceback:)\n{err.traceback_str}")
            raise cause from None
        raise


def make_executor(name: str = "serial", address: str | None = None, cpus_per_task: int = 1,
                  progress: bool = True) -> Executor:
    """The executor the CLI options name: ``serial`` (``address`` must be unset) or ``ray`` (local by default, or
    the cluster at ``address``). Bad values raise one CadxConfigError line naming the option."""
    if name not in EXECUTORS:
        raise CadxConfigError(f"--executor: {name!r} is not one of {', '.join(EXECUTORS)}")
    if name == "serial":
        if address is not None:
            raise CadxConfigError("--address: only with --executor ray")
        if int(cpus_per_task) < 1:
            raise CadxConfigError(f"--cpus-per-task: must be at least 1, got {cpus_per_task}")
        return SerialExecutor()
    return RayExecutor(address=address, cpus_per_task=int(cpus_per_task), progress=progress)

