"""The JSON API; it mirrors the CLI: ``compare``, ``scan`` and ``probe`` as jobs, reports,
the index, the atlas, fingerprint uploads. Every path a client names goes through
``security.confine`` (a probe's models: ``confine_probed``) before a job sees it.
Errors are raised as ``ForebearError``\\ s and rendered by the app (``{"error", "hint"}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from forebear import __version__
from forebear.errors import ForebearError, InputNotFoundError
from forebear.index import Index
from forebear.web.jobs import Job, NotCancellableError
from forebear.web.runs import ProbeJob, compare_work, probe_work, scan_work
from forebear.web.security import confine, confine_probed
from forebear.web.uploads import store_fingerprint

__all__ = ["MAX_PROBED", "CompareRequest", "ProbeRequest", "ScanRequest", "router", "web_state"]

MAX_PROBED = 16  # candidates, and controls, in one probe: each is a model loaded or asked
_PROBED = ("a model folder under a root, or an endpoint http://host:port/v1#model (loopback, "
           "or a host the server allows with --endpoint)")  # fmt: skip

router = APIRouter(prefix="/api")


def web_state(request: Request) -> Any:
    """The app's ``WebState`` (typed ``Any``: FastAPI resolves it at run time)."""
    return request.app.state.forebear


State = Annotated[Any, Depends(web_state)]


class CompareRequest(BaseModel):
    """``forebear compare A B [--fast]``."""

    a: str = Field(description="The suspected parent: a path under a root, an uploaded "
                   "fingerprint's path, or a hub id org/name[@revision].")  # fmt: skip
    b: str = Field(description="The model under question (the same kinds as a).")
    fast: bool = Field(False, description="Read a sample of rows; same-position test only.")


class ScanRequest(BaseModel):
    """``forebear scan MODEL [--index FILE] [--top N] [--weights]``."""

    model: str = Field(description="A path under a root, a fingerprint or a hub id.")
    index: str | None = Field(None, description="Index file under a root (default: the "
                              "server's --index).")  # fmt: skip
    top: int = Field(5, ge=1, le=50, description="Candidates to test.")
    weights: bool = Field(False, description="Also compare the weights of candidates.")


class ProbeRequest(BaseModel):
    """``forebear probe SUSPECT --candidates … [--controls …]``: behavioural evidence."""

    suspect: str = Field(description=f"The model under question: {_PROBED}.")
    candidates: list[str] = Field(min_length=1, max_length=MAX_PROBED,
                                  description="Candidate origins (the same kinds).")  # fmt: skip
    controls: list[str] = Field(default_factory=list, max_length=MAX_PROBED,
                                description="Independent control models.")  # fmt: skip
    budget: int = Field(2000, ge=1, le=100_000, description="Most prompts per model.")
    batch: int = Field(100, ge=1, le=10_000, description="Prompts between two looks.")
    alpha: float = Field(0.01, gt=0, lt=1, description="Error rate of each verdict.")
    seed: int = Field(0, ge=0, description="Seed of the probe prompts.")
    same_data_controls: bool = Field(
        False, description="The controls were trained on the candidates' data (the test then "
        "answers distillation).")  # fmt: skip


def _roots(state: Any) -> list[Path]:
    return [*state.settings.roots, state.settings.uploads.resolve()]


def _accepted(job: Job) -> JSONResponse:
    return JSONResponse(job.snapshot(), status_code=202,
                        headers={"Location": f"/api/jobs/{job.id}"})  # fmt: skip


@router.get("/health", summary="Liveness, version and queue occupancy (no token needed)")
def health(state: State) -> dict[str, Any]:
    jobs = [job.snapshot()["status"] for job in state.jobs.jobs()]
    return {"status": "ok", "version": __version__, "running": jobs.count("running"),
            "queued": jobs.count("queued"), "capacity": state.jobs.capacity}  # fmt: skip


@router.post("/compare", status_code=202, summary="Start a comparison (forebear compare)")
def start_compare(body: CompareRequest, state: State) -> JSONResponse:
    a, b = confine(body.a, _roots(state)), confine(body.b, _roots(state))
    work = compare_work(state.settings.reports, a, b, fast=body.fast)
    return _accepted(state.jobs.submit("compare", {"a": a, "b": b, "fast": body.fast}, work))


@router.post("/scan", status_code=202, summary="Start a scan against the index (forebear scan)")
def start_scan(body: ScanRequest, state: State) -> JSONResponse:
    model = confine(body.model, _roots(state))
    index = state.settings.index if body.index is None else Path(confine(body.index, _roots(state)))
    if not index.is_file():
        raise InputNotFoundError("no index here", path=index,
                                 hint="add models with `forebear index add MODEL`")  # fmt: skip
    work = scan_work(state.settings.reports, model, index, top=body.top, weights=body.weights)
    params = {"model": model, "index": str(index), "top": body.top, "weights": body.weights}
    return _accepted(state.jobs.submit("scan", params, work))


@router.post("/probe", status_code=202,
             summary="Start a behaviour probe (forebear probe): behavioural evidence")  # fmt: skip
def start_probe(body: ProbeRequest, state: State) -> JSONResponse:
    settings = state.settings

    def confined(refs: list[str]) -> tuple[str, ...]:
        return tuple(confine_probed(ref, _roots(state), settings.endpoints) for ref in refs)

    job = ProbeJob(confined([body.suspect])[0], confined(body.candidates),
                   confined(body.controls), budget=body.budget, batch=body.batch,
                   alpha=body.alpha, seed=body.seed,
                   same_data_controls=body.same_data_controls)  # fmt: skip
    named = [*job.candidates, *job.controls]
    if len(set(named)) != len(named):
        raise ForebearError(
            "a model is named twice among the candidates and controls",
            hint="name each model once (the candidates already control each other)",
        )
    work = probe_work(settings.reports, settings.state / "responses.sqlite", job)
    params = {"suspect": job.suspect, "candidates": list(job.candidates),
              "controls": list(job.controls), "budget": job.budget, "batch": job.batch,
              "alpha": job.alpha, "same_data_controls": job.same_data_controls}  # fmt: skip
    return _accepted(state.jobs.submit("probe", params, work))


@router.get("/jobs", summary="Every job kept, newest first")
def list_jobs(state: State) -> dict[str, Any]:
    return {"jobs": [job.snapshot() for job in state.jobs.jobs()]}


@router.get("/jobs/{job_id}", summary="One job: status, progress, summary, report id")
def get_job(job_id: str, state: State) -> dict[str, Any]:
    return dict(_job(state, job_id).snapshot())


@router.delete(
    "/jobs/{job_id}", summary="Cancel a queued job; a running one stops at its next progress step"
)
def cancel_job(job_id: str, state: State) -> dict[str, Any]:
    job = _job(state, job_id)
    if not state.jobs.cancel(job_id):
        raise NotCancellableError(f"job {job_id}: {job.snapshot()['status']}, already ended",
                            hint="only a waiting or running job can be cancelled")  # fmt: skip
    return dict(job.snapshot())


def _job(state: Any, job_id: str) -> Job:
    job: Job | None = state.jobs.get(job_id)
    if job is None:
        raise InputNotFoundError(f"job {job_id}: no such job",
                                 hint="list the jobs with GET /api/jobs")  # fmt: skip
    return job


@router.get("/reports", summary="Stored reports, newest first")
def list_reports(state: State) -> dict[str, Any]:
    from forebear.web.reports import list_reports as listed

    return {"reports": listed(state.settings.reports)}


@router.get("/reports/{report_id}", summary="One report as JSON (forebear's report schema)")
def get_report(report_id: str, state: State) -> dict[str, Any]:
    from forebear.web.reports import report_json

    return report_json(state.settings.reports, report_id)


@router.get("/index", summary="Indexed models, paginated (forebear index ls)")
def list_index(
    state: State,
    family: Annotated[str | None, Query(description="Only this family.")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    with Index.open(state.settings.index, create=False) as opened:
        records = list(opened.records(family=family))
    page = [record.to_json() | {"label": record.label} for record in records]
    return {"index": str(state.settings.index), "total": len(page), "offset": offset,
            "limit": limit, "records": page[offset : offset + limit]}  # fmt: skip


@router.get("/index/{label:path}", summary="One indexed model (forebear index show)")
def get_record(label: str, state: State) -> dict[str, Any]:
    ref, at, revision = label.rpartition("@")
    with Index.open(state.settings.index, create=False) as opened:
        record = opened.get(ref, revision, fingerprint_version=None) if at else None
        record = record or opened.get(label, None, fingerprint_version=None)
    if record is None:
        raise InputNotFoundError(f"{label} is not in the index", path=state.settings.index,
                                 hint="list what is with GET /api/index")  # fmt: skip
    return record.to_json() | {"label": record.label}


@router.get("/atlas", summary="The lineage atlas of the index: nodes and evidence edges")
def atlas(
    state: State, family: Annotated[str | None, Query(description="Only this family.")] = None
) -> dict[str, Any]:
    graph: dict[str, Any] = state.atlas.graph(family)
    return graph


@router.post(
    "/fingerprints",
    status_code=201,
    summary="Upload a fingerprint file (forebear fingerprint -o FILE) for compare or scan",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)  # fmt: skip
async def upload_fingerprint(request: Request, state: State) -> JSONResponse:
    settings = state.settings
    stored = await store_fingerprint(request.stream(), settings.uploads,
                                     settings.max_upload_bytes)  # fmt: skip
    return JSONResponse(stored, status_code=201)
