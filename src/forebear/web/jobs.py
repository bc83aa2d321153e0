"""The job queue: comparisons and scans run on a small thread pool, with bounded waiting.

``JobQueue.submit`` refuses (``QueueFullError``) when ``max_running`` jobs run and
``max_pending`` more wait, so a client cannot pile up work. Each ``Job`` keeps
its last progress messages; every change to it happens under its lock and
readers get a ``snapshot`` (a plain dict), so a poll never sees half a
transition. A ``ForebearError`` ends a job as "failed" with its one line; any
other exception as "failed" with its type and message, never a traceback.
A queued job is cancelled at once. A running one is asked to stop: its next
progress message (the library reports per layer of a comparison, per candidate
of a scan, per batch of a probe) raises ``JobStopped`` inside the work — a ``BaseException``, so no
``except Exception`` on the way swallows it, and every ``with`` closes its
files — and the job ends "cancelled". Work that reports nothing more runs to
its end. This module owns job state; what a job does is ``runs``'s.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from forebear.errors import ForebearError
from forebear.web.security import QueueFullError

__all__ = ["Job", "JobOutcome", "JobQueue", "JobStopped", "NotCancellableError", "Progress"]

Status = Literal["queued", "running", "done", "failed", "cancelled"]
Progress = Callable[[str], None]
_FINISHED = ("done", "failed", "cancelled")
_log = logging.getLogger(__name__)


class JobStopped(BaseException):  # a signal, like KeyboardInterrupt, not an error
    """Raised by a running job's progress callback once the job is asked to stop."""


class NotCancellableError(ForebearError):
    """A job that already runs or ended cannot be cancelled (HTTP 409)."""


@dataclass(frozen=True)
class JobOutcome:
    """What a finished job leaves: its report's id and a one-line summary."""

    report: str | None
    summary: Mapping[str, Any] = field(default_factory=dict)


Work = Callable[[str, Progress], JobOutcome]  # (job id, progress) -> outcome


class Job:
    """One submitted comparison or scan. Read it through ``snapshot``."""

    def __init__(self, kind: str, params: Mapping[str, Any], keep: int) -> None:
        self.id = secrets.token_hex(6)
        self.kind = kind
        self.params = dict(params)
        self._lock = threading.Lock()
        self._status: Status = "queued"
        self._progress: deque[str] = deque(maxlen=keep)
        self._times: dict[str, float] = {"created": time.time()}
        self._error: str | None = None
        self._outcome: JobOutcome | None = None
        self._stop = False  # asked to stop while running
        self.future: Future[None] | None = None

    @property
    def finished(self) -> bool:
        with self._lock:
            return self._status in _FINISHED

    def say(self, message: str) -> None:
        """Record progress; raises ``JobStopped`` once the job was asked to stop."""
        with self._lock:
            if self._stop:
                raise JobStopped(self.id)
            self._progress.append(message)

    def start(self) -> bool:
        """Mark running; False when the job was cancelled while it waited."""
        with self._lock:
            if self._status != "queued":
                return False
            self._status, self._times["started"] = "running", time.time()
            return True

    def finish(self, outcome: JobOutcome | None, error: str | None) -> None:
        with self._lock:
            self._status = "failed" if error is not None else "done"
            self._outcome, self._error = outcome, error
            self._times["finished"] = time.time()

    def cancel(self) -> bool:
        """Cancel a queued job, or ask a running one to stop at its next progress message;
        False when it has ended."""
        with self._lock:
            if self._status == "running":
                self._stop = True
                return True
            if self._status != "queued":
                return False
            self._status, self._times["finished"] = "cancelled", time.time()
            return True

    def stopped(self) -> None:
        with self._lock:
            self._status, self._times["finished"] = "cancelled", time.time()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            outcome = self._outcome
            return {
                "id": self.id, "kind": self.kind, "params": dict(self.params),
                "status": self._status, "progress": list(self._progress),
                "stopping": self._stop and self._status == "running",
                "error": self._error, "report": None if outcome is None else outcome.report,
                "summary": None if outcome is None else dict(outcome.summary),
                **{key: value for key, value in self._times.items()},
            }  # fmt: skip


class JobQueue:
    """A bounded queue of jobs on ``max_running`` threads."""

    def __init__(self, max_running: int, max_pending: int, *, keep: int = 50,
                 history: int = 200) -> None:  # fmt: skip
        self.capacity = max_running + max_pending
        self._keep, self._history = keep, history
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="forebear-job")
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def submit(self, kind: str, params: Mapping[str, Any], work: Work) -> Job:
        """Queue ``work``; ``QueueFullError`` when every running and waiting place is taken."""
        with self._lock:
            active = sum(not job.finished for job in self._jobs.values())
            if active >= self.capacity:
                raise QueueFullError(
                    f"job queue: {active} jobs running or waiting (at most {self.capacity})",
                    hint="retry when one finishes (GET /api/jobs), or raise --max-jobs",
                )
            job = Job(kind, params, self._keep)
            self._jobs[job.id] = job
            self._forget_old()
            job.future = self._pool.submit(_run, job, work)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        """Every job kept, newest first."""
        with self._lock:
            return list(reversed(self._jobs.values()))

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job or ask a running one to stop; False when it has ended."""
        job = self.get(job_id)
        return job is not None and job.cancel()

    def shutdown(self) -> None:
        """Cancel what waits and let running jobs end (their threads are not joined)."""
        for job in self.jobs():
            job.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _forget_old(self) -> None:
        finished = [key for key, job in self._jobs.items() if job.finished]
        for key in finished[: max(0, len(finished) - self._history)]:
            del self._jobs[key]


def _run(job: Job, work: Work) -> None:
    if not job.start():
        return
    try:
        outcome = work(job.id, job.say)
    except JobStopped:
        job.stopped()
    except ForebearError as error:
        job.finish(None, str(error))
    except Exception as error:  # a job must end; the client gets one line, the log the rest
        _log.exception("job %s failed", job.id)
        job.finish(None, f"internal error ({type(error).__name__}: {error})")
    else:
        job.finish(outcome, None)
