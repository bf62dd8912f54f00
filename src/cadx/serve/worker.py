"""The background prediction worker: one daemon thread that lists the sources again (folder, manifest, PACS),
predicts every (study, run) pair missing from the cache, studies in worklist order, then sleeps ``poll_s`` and
looks again — a retrained run (new fingerprint),
a new file in the studies folder or a new PACS study is picked up without a restart. Progress: ``GET /api/jobs``.
"""

from __future__ import annotations

import threading

from cadx.serve.state import ServeState, log

__all__ = ["PredictionWorker", "run_pending"]


def run_pending(state: ServeState, stop: threading.Event | None = None) -> int:
    """Predict every pending pair now (in this thread); returns how many were predicted. Stops early when
    ``stop`` is set."""
    n = 0
    state.busy.set()
    try:
        for row, run in state.pending():
            if stop is not None and stop.is_set():
                break
            state.predict(row, run)
            n += 1
    finally:
        state.busy.clear()
    return n


class PredictionWorker:
    """``start()`` the thread, ``stop()`` it (waits for the current prediction to finish)."""

    def __init__(self, state: ServeState) -> None:
        self.state = state
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.state.refresh_studies()
                run_pending(self.state, self._stop)
            except Exception as e:  # keep serving: one bad cycle is logged (type only: no paths), next one retries
                log.error("prediction worker cycle failed: %s", type(e).__name__)
            self._stop.wait(self.state.settings.poll_s)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="cadx-serve-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
