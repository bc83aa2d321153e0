"""Making index records from models, one or thousands: the task and the engines that run it.

``fingerprint_task(ref, settings)`` is the unit of work: a top-level, picklable
function that opens one model, fingerprints it, reads its card and returns an
``IndexRecord``. ``build_index`` submits tasks through any
``concurrent.futures.Executor`` (``executor`` makes the three engines: a local
spawn-context process pool, a Dask cluster, or serial for debugging) and writes
each result to the index **in the calling process**, as it completes: one
writer, one short transaction per record, keys already present left alone. So
a task retried by Dask is harmless, and a build killed half way resumes where
it stopped: the records written are skipped the next time.

BLAS and OpenMP run one thread per task (the environment variables are set
before the pool starts its processes); Dask's nanny sets the same variables for
its workers by default.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from multiprocessing import get_context
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from forebear.errors import ForebearError, InputNotFoundError
from forebear.index.card import read_card
from forebear.index.record import IndexRecord, record_from_fingerprint
from forebear.index.store import Index

__all__ = [
    "BuildOutcome",
    "BuildReport",
    "Engine",
    "SerialExecutor",
    "TaskSettings",
    "build_index",
    "executor",
    "fingerprint_task",
    "make_record",
    "normalize_ref",
    "read_ref_list",
    "split_ref",
]

SINGLE_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
MAX_LIST_BYTES = 64 << 20

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class TaskSettings:
    """What every task of a build shares (picklable: it travels to the workers)."""

    dims: int = 256
    units: int = 64
    token: str | None = None  # a hub token; None: the workers' own login or HF_TOKEN
    content_units: int | None = None  # None: the fingerprint's default (local 64, remote 0)


@dataclass(frozen=True)
class BuildOutcome:
    ref: str  # as listed
    status: str  # "added", "present" (written meanwhile), "skipped" (already indexed), "failed"
    message: str | None = None  # the one-line error of a failure


@dataclass(frozen=True)
class BuildReport:
    outcomes: tuple[BuildOutcome, ...]
    seconds: float

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def failed(self) -> list[BuildOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == "failed"]


def split_ref(text: str) -> tuple[str, str | None]:
    """``org/name@revision`` → (``org/name``, ``revision``); an existing local path (which
    may hold an ``@``) and a URL are never split."""
    text = text.strip()
    if "@" not in text or "://" in text or Path(text).exists():
        return text, None  # a URL's "@" belongs to its user part
    name, _, revision = text.rpartition("@")
    return (name, revision) if name and revision else (text, None)


def normalize_ref(ref: str) -> str:
    """What the index keys a model by: an existing local path made absolute, else ``ref``."""
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.exists() else ref


def read_ref_list(path: str | os.PathLike[str]) -> list[str]:
    """Model refs of a list file: one a line, ``#`` starts a comment, duplicates dropped."""
    target = Path(path)
    try:
        size = target.stat().st_size
    except FileNotFoundError:
        raise InputNotFoundError("no such list", path=target, hint="check the path") from None
    if size > MAX_LIST_BYTES:
        raise ForebearError(
            f"a list of {size} bytes is over the {MAX_LIST_BYTES}-byte limit",
            path=target,
            hint="split it into smaller lists",
        )
    refs: dict[str, None] = {}
    for line in target.read_text(encoding="utf-8", errors="replace").splitlines():
        text = line if not line.lstrip().startswith("#") else ""
        text = text.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if text:
            refs[text] = None
    return list(refs)


def make_record(
    ref: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    dims: int = 256,
    units: int = 64,
    content_units: int | None = None,
) -> IndexRecord:
    """Open ``ref`` (a local path, or what ``open_model`` accepts), fingerprint it and read
    its model card; the record's revision is the resolved one when the source knows it."""
    from forebear.fingerprint import fingerprint
    from forebear.model import open_model

    name = normalize_ref(ref)
    # Only what is set: a local path needs neither, and works with any open_model.
    options: dict[str, Any] = {k: v for k, v in (("revision", revision), ("token", token)) if v}
    with open_model(name, **options) as model:
        found = fingerprint(model, dims=dims, units=units, content_units=content_units, source=name)
        card = read_card(model.location) if model.location is not None else None
    resolved = found.meta.get("revision")
    return record_from_fingerprint(
        found,
        ref=name,
        revision=resolved if isinstance(resolved, str) and resolved else revision,
        card=card,
    )


def fingerprint_task(ref: str, settings: TaskSettings) -> IndexRecord:
    """The batch task: ``ref`` as listed (``name[@revision]``) → its record."""
    name, revision = split_ref(ref)
    return make_record(
        name, revision=revision, token=settings.token, dims=settings.dims, units=settings.units,
        content_units=settings.content_units,
    )  # fmt: skip


class SerialExecutor(Executor):
    """Runs each task when it is submitted, in this process: for debugging and tests."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)
        return future


class Engine(StrEnum):
    process = "process"
    dask = "dask"
    serial = "serial"


@contextmanager
def executor(
    engine: Engine, *, workers: int | None = None, scheduler: str | None = None
) -> Iterator[Executor]:
    """An executor for ``engine``, shut down on exit."""
    if engine is Engine.serial:
        yield SerialExecutor()
    elif engine is Engine.process:
        with _single_threaded_blas():
            spawn = get_context("spawn")  # no fork of a process holding an open SQLite file
            processes = ProcessPoolExecutor(max_workers=workers or _cores(), mp_context=spawn)
            try:
                yield processes
            finally:
                processes.shutdown(wait=True, cancel_futures=True)
    else:
        with _dask_executor(scheduler) as cluster:
            yield cluster


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))  # what this process may use, not the machine
    return os.cpu_count() or 1


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in SINGLE_THREAD_VARIABLES}
    os.environ.update({name: "1" for name in SINGLE_THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _dask_executor(scheduler: str | None) -> Iterator[Executor]:
    if not scheduler:
        raise ForebearError(
            "the dask engine needs a scheduler address",
            hint="pass --scheduler tcp://HOST:8786 (start one with `dask scheduler`)",
        )
    try:
        distributed: Any = importlib.import_module("distributed")  # an optional extra
    except ImportError:
        raise ForebearError(
            "the dask engine needs Dask distributed", hint="pip install 'forebear[dask]'"
        ) from None
    try:
        client = distributed.Client(scheduler, timeout=30)
    except OSError as error:
        raise ForebearError(
            f"cannot reach the Dask scheduler at {scheduler} ({error})",
            hint="check the address and that the scheduler is running",
        ) from None
    try:
        yield client.get_executor()
    finally:
        client.close()


def build_index(
    index: Index,
    refs: Sequence[str],
    pool: Executor,
    settings: TaskSettings = TaskSettings(),  # frozen: one default is safe to share
    *,
    force: bool = False,
    window: int = 64,
    progress: Callable[[BuildOutcome], None] | None = None,
) -> BuildReport:
    """Fingerprint ``refs`` through ``pool`` and add each record as it completes; refs
    already indexed are skipped unless ``force`` (which replaces them). At most ``window``
    tasks are in flight, so a list of a million refs is not submitted at once."""
    start = time.monotonic()
    outcomes: list[BuildOutcome] = []

    def done(outcome: BuildOutcome) -> None:
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)

    todo = [ref for ref in dict.fromkeys(refs) if force or not _indexed(index, ref, done)]
    in_flight: dict[Future[IndexRecord], str] = {}
    queue = iter(todo)
    try:
        while True:
            for ref in queue:
                in_flight[pool.submit(fingerprint_task, ref, settings)] = ref
                if len(in_flight) >= window:
                    break
            if not in_flight:
                break
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in [f for f in in_flight if f in finished]:  # in submission order
                done(_store(index, in_flight.pop(future), future, force))
    finally:
        for future in in_flight:
            future.cancel()
    return BuildReport(tuple(outcomes), time.monotonic() - start)


def _indexed(index: Index, ref: str, done: Callable[[BuildOutcome], None]) -> bool:
    name, revision = split_ref(ref)
    if index.get(normalize_ref(name), revision) is None:
        return False
    done(BuildOutcome(ref, "skipped"))
    return True


def _store(index: Index, ref: str, future: Future[IndexRecord], force: bool) -> BuildOutcome:
    try:
        record = future.result()
    except ForebearError as error:
        return BuildOutcome(ref, "failed", str(error))
    except Exception as error:  # a worker's bug must not stop the other refs
        text = " ".join(f"{type(error).__name__}: {error}".split())
        return BuildOutcome(ref, "failed", text)
    try:
        added = index.add(record, replace=force)
    except ForebearError as error:
        return BuildOutcome(ref, "failed", str(error))
    return BuildOutcome(ref, "added" if added else "present")
