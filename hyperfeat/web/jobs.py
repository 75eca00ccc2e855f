"""Background jobs with progress, run one at a time (the model is not shared between threads)."""

from __future__ import annotations

import itertools
import logging
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from hyperfeat.errors import HyperfeatError

log = logging.getLogger(__name__)

Report = Callable[[float, str], None]  # (fraction done in [0, 1], what is being done)


@dataclass
class Job:
    id: str
    kind: str
    state: str = "queued"  # queued | running | done | error
    progress: float = 0.0
    stage: str = "waiting for the previous job"
    result: Optional[dict] = None
    error: Optional[str] = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def report(self, fraction: float, stage: str) -> None:
        with self.lock:
            self.progress = float(min(max(fraction, 0.0), 1.0))
            self.stage = stage

    def as_dict(self) -> dict:
        with self.lock:
            return {
                "id": self.id,
                "kind": self.kind,
                "state": self.state,
                "progress": self.progress,
                "stage": self.stage,
                "result": self.result,
                "error": self.error,
            }


class JobRunner:
    """Runs submitted work in one worker thread; errors become one readable line.

    ``clean`` turns a message into what the page may show (it strips the server's folders).
    Only the last ``keep`` finished jobs are kept (None: all); ``forget(job)`` is called for each
    one dropped, so its owner frees what the job left (its result files).
    """

    def __init__(
        self,
        clean: Callable[[str], str] = str,
        keep: Optional[int] = None,
        forget: Callable[[Job], None] = lambda job: None,
    ):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hyperfeat-web")
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._clean = clean
        self._keep = keep
        self._forget = forget
        self._lock = threading.Lock()

    def submit(self, kind: str, work: Callable[[Job], dict]) -> Job:
        with self._lock:
            job = Job(id=f"{kind}-{next(self._ids)}", kind=kind)
            self._jobs[job.id] = job
        self._pool.submit(self._run, job, work)
        return job

    def get(self, job_id: str) -> Optional[Job]:
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: Job, work: Callable[[Job], dict]) -> None:
        job.report(0.0, "starting")
        with job.lock:
            job.state = "running"
        try:
            result = work(job)
        except HyperfeatError as err:
            self._finish(job, error=self._clean(str(err)))
        except Exception as err:  # noqa: BLE001  (the page gets one line, the log the traceback)
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self._finish(job, error=self._clean(f"internal error ({type(err).__name__}): {err}"))
        else:
            self._finish(job, result=result)

    def _finish(self, job: Job, result: Optional[dict] = None, error: Optional[str] = None) -> None:
        if error is not None:  # the page shows one line
            error = (error.strip().splitlines() or ["failed"])[0]
        with job.lock:
            job.result, job.error = result, error
            job.state = "error" if error is not None else "done"
            job.progress = 1.0
            job.stage = "failed" if error is not None else "done"
        if self._keep is not None:
            with self._lock:
                finished = [j for j in self._jobs.values() if j.state in ("done", "error")]
                dropped = finished[: max(0, len(finished) - self._keep)]
                for old in dropped:
                    del self._jobs[old.id]
            for old in dropped:
                self._forget(old)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def wait(job: Job, timeout: float = 60.0) -> dict[str, Any]:
    """Block until ``job`` finishes (for library users and tests without a browser)."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = job.as_dict()
        if state["state"] in ("done", "error"):
            return state
        time.sleep(0.02)
    raise TimeoutError(f"job {job.id} did not finish in {timeout} s")
