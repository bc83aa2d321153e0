"""``forebear serve``'s JSON API: every endpoint, the path, token, upload and queue rules,
and the one error shape ``{"error", "hint"}``."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from forebear.cli import main
from forebear.errors import ForebearError
from forebear.fingerprint import fingerprint
from forebear.fingerprint.io import fingerprint_to_bytes
from forebear.model import open_model
from forebear.web import WebSettings
from forebear.web.app import create_app
from forebear.web.atlas import layout
from forebear.web.jobs import JobOutcome, Progress
from web_models import UNITS, WebModels, build_web_models

BASE = "http://127.0.0.1"
Client = Callable[..., TestClient]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> WebModels:
    return build_web_models(tmp_path_factory.mktemp("web-api"))


@pytest.fixture
def client(models: WebModels, tmp_path: Path) -> Iterator[Client]:
    """A factory of test clients over a fresh app; every app is shut down afterwards."""
    opened: list[TestClient] = []

    def make(**changes: Any) -> TestClient:
        settings = WebSettings(roots=(models.root,), index=models.index, state=tmp_path / "state")
        fields = {**vars(settings), **changes}
        made = TestClient(create_app(WebSettings(**fields)), base_url=BASE)
        opened.append(made.__enter__())
        return made

    yield make
    for made in opened:
        made.__exit__(None, None, None)


def _finished(client: TestClient, job: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job['id']}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job['id']} still {job['status']}")


def _error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "hint"} and "Traceback" not in response.text
    return str(body["error"])


def test_health_and_the_schema_list_every_endpoint(client: Client) -> None:
    app = client(token="s3cret")
    health = app.get("/api/health").json()  # open without the token
    assert health["status"] == "ok" and health["capacity"] == 10
    schema = app.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).json()
    for path in ("/api/compare", "/api/scan", "/api/jobs", "/api/jobs/{job_id}", "/api/reports",
                 "/api/reports/{report_id}", "/api/index", "/api/index/{label}", "/api/atlas",
                 "/api/fingerprints", "/api/health"):  # fmt: skip
        assert path in schema["paths"], path
    assert "delete" in schema["paths"]["/api/jobs/{job_id}"]
    for gone in ("/docs", "/redoc"):  # Swagger UI and ReDoc load from a CDN: off
        _error(app.get(gone, headers={"Authorization": "Bearer s3cret"}), 404)


def test_a_comparison_runs_as_a_job_and_leaves_a_report(client: Client,
                                                        models: WebModels) -> None:  # fmt: skip
    app = client()
    started = app.post("/api/compare", json={"a": "llama-safetensors", "b": "suspect-finetuned"})
    assert started.status_code == 202 and started.headers["location"].startswith("/api/jobs/")
    assert started.json()["params"]["a"] == str(models.path("llama-safetensors"))
    job = _finished(app, started.json())
    assert job["status"] == "done", job
    assert job["summary"]["derived"] and job["summary"]["log10_p"] < -6
    assert any(line.startswith("compare: layer") for line in job["progress"])
    listed = app.get("/api/reports").json()["reports"]
    assert [r["id"] for r in listed] == [job["report"]] and listed[0]["kind"] == "compare"
    report = app.get(f"/api/reports/{job['report']}").json()
    assert report["kind"] == "compare" and report["verdict"] == job["summary"]["verdict"]
    page = app.get(f"/reports/{job['report']}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "sandbox" in page.headers["content-security-policy"]
    assert app.get("/api/jobs").json()["jobs"][0]["id"] == job["id"]


def test_a_scan_runs_against_the_index(client: Client, models: WebModels) -> None:
    app = client()
    job = app.post("/api/scan", json={"model": str(models.path("suspect-finetuned")), "top": 3})
    done = _finished(app, job.json())
    assert done["status"] == "done", done
    assert str(models.path("llama-safetensors")) in done["summary"]["verdict"]
    assert any(line.startswith("scan: testing 1/") for line in done["progress"])  # stop points
    assert app.get(f"/api/reports/{done['report']}").json()["kind"] == "scan"
    missing = app.post("/api/scan", json={"model": "suspect-finetuned", "index": "nowhere.sqlite"})
    assert "no such file" in _error(missing, 404)


def test_paths_outside_the_roots_are_refused(client: Client, models: WebModels,
                                             tmp_path: Path) -> None:  # fmt: skip
    app = client()
    outside = tmp_path / "outside"
    outside.mkdir()
    (models.root / "escape").symlink_to(outside, target_is_directory=True)
    try:
        for bad in ("../index.sqlite", "llama-safetensors/../../index.sqlite", "/etc/passwd",
                    "escape", "escape/x", str(models.root / "escape")):  # fmt: skip
            response = app.post("/api/compare", json={"a": bad, "b": "suspect-finetuned"})
            message = _error(response, 403)
            assert message.startswith(f"{bad}: outside the allowed roots"), message
            assert str(models.root) in response.json()["hint"]
    finally:
        (models.root / "escape").unlink()
    for bad in ("https://example.com/model.safetensors", "~/model"):
        _error(app.post("/api/compare", json={"a": bad, "b": "suspect-finetuned"}), 403)
    gone = app.post("/api/compare", json={"a": "no-such-model", "b": "suspect-finetuned"})
    assert _error(gone, 404).startswith("no-such-model: no such file or folder under the roots")
    invalid = app.post("/api/compare", json={"a": "llama-safetensors"})
    assert _error(invalid, 422) == "invalid request: b: Field required"


def test_library_errors_fail_the_job_in_one_line(client: Client, models: WebModels) -> None:
    app = client()
    empty = models.root / "not-a-model"
    empty.mkdir(exist_ok=True)
    job = app.post("/api/compare", json={"a": "not-a-model", "b": "suspect-finetuned"})
    done = _finished(app, job.json())
    assert done["status"] == "failed" and done["report"] is None
    assert str(empty) in done["error"] and "\n" not in done["error"]
    hub = app.post("/api/compare", json={"a": "nobody/nothing@main", "b": "suspect-finetuned"})
    assert hub.json()["params"]["a"] == "nobody/nothing@main"  # hub ids pass through
    failed = _finished(app, hub.json())
    assert failed["status"] == "failed" and "Traceback" not in failed["error"]


def test_fingerprint_uploads_are_checked_and_size_limited(client: Client,
                                                          models: WebModels) -> None:  # fmt: skip
    with open_model(models.path("llama-safetensors")) as model:
        data = fingerprint_to_bytes(fingerprint(model, units=UNITS))
    app = client(max_upload_mb=len(data) / (1 << 20) * 1.5)
    stored = app.post("/api/fingerprints", content=data)
    assert stored.status_code == 201, stored.text
    path = stored.json()["path"]
    assert Path(path).parent.name == "uploads" and stored.json()["family"] == "llama"
    started = app.post("/api/compare", json={"a": path, "b": "suspect-finetuned"})
    job = _finished(app, started.json())
    assert job["status"] == "done" and job["summary"]["derived"], job
    too_big = data + data
    assert "over the limit" in _error(app.post("/api/fingerprints", content=too_big), 413)
    chunked = app.post("/api/fingerprints", content=iter([too_big[:1000], too_big[1000:]]))
    _error(chunked, 413)  # no Content-Length: counted while streaming
    assert "not a usable forebear fingerprint" in _error(
        app.post("/api/fingerprints", content=b"\x00" * 64), 422)  # fmt: skip
    _error(app.post("/api/fingerprints", content=b""), 400)
    assert [p.name for p in Path(path).parent.iterdir()] == [Path(path).name]  # no leftovers


def test_the_token_guards_everything_but_health(client: Client) -> None:
    app = client(token="s3cret")
    assert "missing or wrong token" in _error(app.get("/api/jobs"), 401)
    _error(app.get("/api/jobs", headers={"Authorization": "Bearer wrong"}), 401)
    _error(app.get("/"), 401)
    assert app.get("/api/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    opened = app.get("/atlas?token=s3cret", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"].endswith("/atlas")
    assert "httponly" in opened.headers["set-cookie"].lower()
    assert app.get("/atlas").status_code == 200  # the cookie now
    assert app.get("/api/index").status_code == 200


def test_settings_refuse_a_public_address_without_a_token(
    models: WebModels,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = WebSettings(roots=(models.root,), index=models.index, state=tmp_path, host="0.0.0.0")
    with pytest.raises(ForebearError, match="non-loopback address needs a token"):
        create_app(settings)
    monkeypatch.delenv("FOREBEAR_TOKEN", raising=False)
    monkeypatch.setenv("FOREBEAR_CACHE", str(tmp_path / "cache"))
    assert main(["serve", "--host", "0.0.0.0", "--root", str(models.root)]) == 1
    err = capsys.readouterr().err
    assert "non-loopback address needs a token" in err and len(err.strip().splitlines()) == 1


def test_serve_without_the_web_extra_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve"]) == 1
    assert "pip install 'forebear[web]'" in capsys.readouterr().err


def test_a_foreign_host_header_is_refused(client: Client) -> None:
    app = client()
    refused = app.get("/api/health", headers={"Host": "evil.example:8000"})
    assert refused.status_code == 400
    assert "'evil.example' is not served here" in refused.json()["error"]
    assert "127.0.0.1" in refused.json()["hint"]
    assert app.get("/api/health", headers={"Host": "LocalHost:80"}).status_code == 200
    assert app.get("/api/health", headers={"Host": "[::1]:8000"}).status_code == 200


class _Gate:
    """Work that blocks until released, to fill the queue deterministically."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, *args: object, **kwargs: object) -> Callable[[str, Progress], JobOutcome]:
        def work(job_id: str, say: Progress) -> JobOutcome:
            say("waiting")
            assert self.release.wait(30)
            return JobOutcome(report=None, summary={"verdict": "held"})

        return work


def test_jobs_run_concurrently_and_a_full_queue_is_refused(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _Gate()
    monkeypatch.setattr("forebear.web.api.compare_work", gate)
    app = client(max_jobs=2, max_pending=1)
    body = {"a": "llama-safetensors", "b": "suspect-finetuned"}
    jobs = [app.post("/api/compare", json=body).json() for _ in range(3)]
    full = app.post("/api/compare", json=body)
    assert "3 jobs running or waiting (at most 3)" in _error(full, 429)
    assert full.headers["retry-after"]
    deadline = time.monotonic() + 10
    while [app.get(f"/api/jobs/{j['id']}").json()["status"] for j in jobs][:2] != ["running"] * 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert app.get(f"/api/jobs/{jobs[2]['id']}").json()["status"] == "queued"
    assert app.delete(f"/api/jobs/{jobs[2]['id']}").json()["status"] == "cancelled"
    gate.release.set()
    assert [_finished(app, j)["status"] for j in jobs] == ["done", "done", "cancelled"]
    _error(app.delete(f"/api/jobs/{jobs[0]['id']}"), 409)  # ended: nothing to cancel
    assert app.post("/api/compare", json=body).status_code == 202  # room again


def test_a_running_job_stops_at_its_next_progress_step(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling a running job makes its next progress message raise inside the work; the
    work's own cleanup runs (``finally`` here, ``with`` in the library) and the job ends
    "cancelled", with no report."""
    started, cleaned = threading.Event(), threading.Event()

    def slow(*args: object, **kwargs: object) -> Callable[[str, Progress], JobOutcome]:
        def work(job_id: str, say: Progress) -> JobOutcome:
            try:
                for step in range(3000):
                    say(f"layer {step}")
                    started.set()
                    time.sleep(0.01)
                return JobOutcome(report=None, summary={"verdict": "ran to the end"})
            finally:
                cleaned.set()

        return work

    monkeypatch.setattr("forebear.web.api.compare_work", slow)
    app = client()
    job = app.post("/api/compare", json={"a": "llama-safetensors", "b": "suspect-finetuned"})
    assert started.wait(10)
    asked = app.delete(f"/api/jobs/{job.json()['id']}").json()
    assert asked["status"] in ("running", "cancelled")
    ended = _finished(app, job.json())
    assert ended["status"] == "cancelled" and ended["report"] is None and cleaned.is_set()
    assert not ended["stopping"] and len(ended["progress"]) < 3000


def test_two_real_comparisons_at_once(client: Client) -> None:
    app = client(max_jobs=2)
    pairs = [("llama-safetensors", "suspect-disguised"), ("llama-safetensors",
                                                          "suspect-independent")]  # fmt: skip
    jobs = [app.post("/api/compare", json={"a": a, "b": b}).json() for a, b in pairs]
    done = [_finished(app, job) for job in jobs]
    assert [job["summary"]["derived"] for job in done] == [True, False]
    assert len({job["report"] for job in done}) == 2


def test_unknown_jobs_and_reports_are_404(client: Client) -> None:
    app = client()
    assert "no such job" in _error(app.get("/api/jobs/0123456789ab"), 404)
    _error(app.delete("/api/jobs/nope"), 404)
    for bad in ("0123456789ab", "..%2F..%2Fetc%2Fpasswd", "ABCDEF012345"):
        _error(app.get(f"/api/reports/{bad}"), 404)
        _error(app.get(f"/reports/{bad}"), 404)
    _error(app.get("/api/nothing-here"), 404)


def test_the_index_is_browsed_with_pages_and_families(client: Client, models: WebModels,
                                                       tmp_path: Path) -> None:  # fmt: skip
    app = client()
    listing = app.get("/api/index", params={"limit": 3}).json()
    assert listing["total"] == 4 and len(listing["records"]) == 3
    assert len(app.get("/api/index", params={"offset": 3}).json()["records"]) == 1
    assert app.get("/api/index", params={"family": "gpt2"}).json()["total"] == 0
    label = str(models.path("suspect-finetuned"))
    record = app.get("/api/index/" + quote(label, safe=""))
    assert record.status_code == 200 and record.json()["label"] == label
    assert app.get("/api/index/" + label).json() == record.json()  # unencoded slashes too
    assert record.json()["structure"]["hidden"] == 64
    assert "not in the index" in _error(app.get("/api/index/nobody/nothing"), 404)
    empty = client(index=tmp_path / "none.sqlite")
    assert "no index here" in _error(empty.get("/api/index"), 404)
    assert "no index here" in empty.get("/index").text


def test_the_atlas_draws_the_index_forest(client: Client, models: WebModels) -> None:
    app = client()
    atlas = app.get("/api/atlas").json()
    assert len(atlas["nodes"]) == 4 and atlas["families"] == 2
    parent = str(models.path("llama-safetensors"))
    assert {e["parent"] for e in atlas["edges"]} == {parent}
    edge = atlas["edges"][0]
    for key in ("relation", "log10_p", "distance", "p_weights", "decided_by", "reasons"):
        assert key in edge
    node = next(n for n in atlas["nodes"] if n["id"] == parent)
    assert node["name"] == "llama-safetensors" and node["family"] == "llama"
    assert app.get("/api/atlas").json() == atlas  # cached per index generation


def test_layout_puts_children_below_parents_and_families_apart() -> None:
    at = layout([["a", "b", "c", "m"], ["z"]], [("a", "b"), ("a", "c"), ("b", "m"), ("c", "m")])
    assert at["a"][1] < at["b"][1] == at["c"][1] < at["m"][1]
    assert at["b"][0] != at["c"][0]
    assert at["z"][0] > max(x for name, (x, _) in at.items() if name != "z")


def test_pages_render_with_a_strict_policy(client: Client, models: WebModels) -> None:
    app = client()
    for page in ("/", "/reports", "/index", "/atlas", "/index?family=llama&offset=0"):
        response = app.get(page)
        assert response.status_code == 200, page
        assert "script-src 'self'" in response.headers["content-security-policy"]
    assert str(models.root) in app.get("/").text
    assert "suspect-finetuned" in app.get("/index").text


# ---------------------------------------------------------------- the behaviour probe


@pytest.fixture(scope="module")
def probed(models: WebModels) -> dict[str, Path]:
    """Tiny random-init llamas under the root: a parent, its copy and two controls."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from behavior_models import probe_models

    return probe_models(models.root / "behaviour")


def test_a_probe_runs_as_a_job_and_leaves_a_behavioural_report(
    client: Client, probed: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from forebear.behavior.server import serve_models

    monkeypatch.setenv("FOREBEAR_API_KEY", "sk-server-only")
    app = client()
    with serve_models({"copy": probed["copy"]}) as url:  # the suspect behind a loopback API
        body = {"suspect": f"{url}#copy", "candidates": ["behaviour/parent"],
                "controls": ["behaviour/control-a\n", str(probed["control-b"])],
                "budget": 100, "batch": 50}  # fmt: skip
        started = app.post("/api/probe", json=body)
        assert started.status_code == 202, started.text
        assert started.json()["params"]["candidates"] == [str(probed["parent"])]
        job = _finished(app, started.json())
    assert job["status"] == "done", job
    summary = job["summary"]
    assert summary["evidence"] == "behavioural" and summary["verdict"] == "derived"
    assert summary["derived_from"] == [str(probed["parent"])] and summary["log10_p"] < -2
    assert any(line.startswith("probe: ") for line in job["progress"])
    report = app.get(f"/api/reports/{job['report']}").json()
    assert report["kind"] == "probe" and report["verdict"] == "behaviour: derived"
    assert report["headline"].startswith("Behavioural evidence (not weight evidence)")
    html = app.get(f"/reports/{job['report']}").text
    assert "Which question each number answers" in html
    assert "sk-server-only" not in json.dumps(job) + json.dumps(report) + html


def test_probe_references_are_confined(
    client: Client, models: WebModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Any] = []

    def stub(reports: Path, cache: Path, job: Any) -> Callable[[str, Progress], JobOutcome]:
        asked.append(job)
        return lambda job_id, say: JobOutcome(report=None, summary={"verdict": "stub"})

    monkeypatch.setattr("forebear.web.api.probe_work", stub)
    app = client()
    body = {"suspect": "suspect-finetuned", "candidates": ["llama-safetensors"]}
    outside = app.post("/api/probe", json={**body, "controls": ["/etc"]})
    assert _error(outside, 403).startswith("/etc: outside the allowed roots")
    remote = app.post("/api/probe", json={**body, "suspect": "https://api.example.com/v1#gpt"})
    assert _error(remote, 403) == (
        "https://api.example.com/v1#gpt: endpoint host api.example.com is not allowed — a probe "
        "may ask loopback endpoints and the hosts the server was started with --endpoint; to "
        "allow this one: forebear serve --endpoint api.example.com"
    )
    listed = client(endpoints=("api.example.com",))
    accepted = listed.post("/api/probe", json={**body, "suspect": "https://api.example.com/v1#gpt"})
    assert accepted.status_code == 202 and asked[-1].suspect == "https://api.example.com/v1#gpt"
    for bad in ("http://user:key@127.0.0.1:8000/v1#m", "http://127.0.0.1:8000/v1"):
        assert "not an endpoint reference" in _error(app.post("/api/probe", json={
            **body, "suspect": bad}), 400)  # fmt: skip
    hub = app.post("/api/probe", json={**body, "suspect": "nobody/nothing"})
    assert "not a local model folder" in _error(hub, 400)
    twice = app.post(
        "/api/probe", json={**body, "controls": [str(models.path("llama-safetensors"))]}
    )
    assert "named twice" in _error(twice, 400)
    many = app.post("/api/probe", json={**body, "candidates": ["llama-safetensors"] * 17})
    assert _error(many, 422).startswith("invalid request: candidates: List should have at most 16")
    _error(app.post("/api/probe", json={**body, "candidates": []}), 422)
    schema = app.get("/openapi.json").json()
    assert "post" in schema["paths"]["/api/probe"]
