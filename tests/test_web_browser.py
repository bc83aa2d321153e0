"""``forebear serve`` in a real browser: Debian's chromium driven by Playwright (nothing is
downloaded), against a uvicorn server on 127.0.0.1 that the tests start themselves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("playwright.sync_api", reason="playwright (Python) is missing")

from playwright.sync_api import sync_playwright

from forebear.web import WebSettings
from forebear.web.app import create_app
from forebear.web.server import background_server
from forebear.zoo.build import ZooBuild
from web_models import WebModels, build_web_models

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (make test installs Debian's chromium)"
)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> WebModels:
    return build_web_models(tmp_path_factory.mktemp("web-browser"))


@pytest.fixture(scope="module")
def zoo_models(mini: ZooBuild) -> Path:
    """The mini zoo's models folder (trained llamas: a base, its fine-tunes, others)."""
    return mini.manifest.model_path("llama-a").parent.resolve()


@pytest.fixture(scope="module")
def base_url(models: WebModels, zoo_models: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[str]:  # fmt: skip
    state = tmp_path_factory.mktemp("web-state")
    roots = (models.root, zoo_models)
    app = create_app(WebSettings(roots=roots, index=models.index, state=state))
    with background_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, base_url: str) -> Iterator[Any]:
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", lambda m: errors.append(m.text) if _unexpected(m) else None)
    yield opened
    context.close()
    assert not errors, errors  # no script error, no CSP violation


def _unexpected(message: Any) -> bool:
    """Console errors other than a refused request's status (the tests provoke those)."""
    return bool(message.type == "error" and "Failed to load resource" not in message.text)


def test_a_comparison_from_the_page_shows_its_verdict_and_report(page: Any) -> None:
    page.goto("/")
    page.fill("#compare-a", "llama-safetensors")
    page.fill("#compare-b", "suspect-finetuned")
    page.click("#compare-run")
    verdict = page.locator("#job-verdict")
    verdict.wait_for(state="visible")
    assert "derived" in verdict.inner_text()
    assert page.locator("#job-status").inner_text() == "done"
    assert page.locator("#job-progress li").count() >= 2
    page.locator("#jobs tbody tr").first.wait_for()
    with page.expect_navigation():
        page.click("#job-report-link")
    assert page.url.rsplit("/", 2)[-2] == "reports"
    assert "derived" in page.content()
    page.goto("/reports")
    assert page.locator("#reports .report-link").count() >= 1
    with page.expect_navigation():
        page.locator("#reports .report-link").first.click()
    assert "/reports/" in page.url


def test_two_mini_zoo_models_compared_from_the_page(page: Any, zoo_models: Path) -> None:
    page.goto("/")
    page.fill("#compare-a", str(zoo_models / "llama-a"))
    page.fill("#compare-b", str(zoo_models / "llama-a-ft"))
    page.click("#compare-run")
    verdict = page.locator("#job-verdict")
    verdict.wait_for(state="visible")
    assert "derived: light fine-tune" in verdict.inner_text()
    with page.expect_navigation():
        page.click("#job-report-link")
    assert "llama-a-ft" in page.content() and "What this test cannot see" in page.content()
    page.goto("/")
    page.fill("#compare-a", str(zoo_models / "llama-a"))
    page.fill("#compare-b", str(zoo_models / "llama-c"))
    page.click("#compare-run")
    page.locator("#job-verdict", has_text="independent").wait_for(state="visible")


def test_a_running_job_is_cancelled_from_the_page(
    page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    def slow(*args: object, **kwargs: object) -> Any:
        def work(job_id: str, say: Any) -> Any:
            for step in range(3000):  # stops at the say() after the click
                say(f"layer {step}")
                time.sleep(0.01)
            raise AssertionError("ran to the end")

        return work

    monkeypatch.setattr("forebear.web.api.compare_work", slow)
    page.goto("/")
    page.fill("#compare-a", "llama-safetensors")
    page.fill("#compare-b", "suspect-finetuned")
    page.click("#compare-run")
    page.locator("#job-status", has_text="running").wait_for()
    page.click("#job-cancel")
    page.locator("#job-status", has_text="cancelled").wait_for()
    assert page.locator("#job-cancel").is_hidden()
    assert page.locator("#job-report").is_hidden()


def test_a_refused_path_is_shown_on_the_page(page: Any) -> None:
    page.goto("/")
    page.fill("#compare-a", "../../etc/passwd")
    page.fill("#compare-b", "suspect-finetuned")
    page.click("#compare-run")
    error = page.locator("#job-error")
    error.wait_for(state="visible")
    assert "outside the allowed roots" in error.inner_text()


def test_a_probe_from_the_page_shows_its_behavioural_verdict_and_report(
    page: Any, models: WebModels
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from behavior_models import probe_models

    made = probe_models(models.root / "behaviour")
    page.goto("/")
    page.fill("#probe-suspect", "behaviour/copy")
    page.fill("#probe-candidates", "behaviour/parent")
    page.fill("#probe-controls", "behaviour/control-a,\n" + str(made["control-b"]))
    page.fill("#probe-budget", "100")
    page.click("#probe-run")
    verdict = page.locator("#job-verdict")
    verdict.wait_for(state="visible")
    text = verdict.inner_text()
    assert "behavioural evidence (not weight evidence)" in text.lower()
    assert f"behaves like a derivative of {made['parent']}" in text
    assert "controls: " + str(made["control-a"]) in page.locator("#job-params").inner_text()
    with page.expect_navigation():
        page.click("#job-report-link")
    content = page.content()
    assert "Behavioural evidence" in content and "Which question each number answers" in content


def test_the_atlas_zooms_and_explains_nodes_and_edges(page: Any, models: WebModels) -> None:
    page.goto("/atlas")
    page.locator("svg#atlas[data-ready]").wait_for(state="attached")
    assert page.locator("#atlas .node").count() == 4
    assert page.locator("#atlas .edge").count() == 2
    layer = page.locator("#atlas > g")
    before = layer.get_attribute("transform")
    page.click("#zoom-in")
    zoomed = layer.get_attribute("transform")
    assert zoomed != before
    box = page.locator("#atlas").bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + 140, box["y"] + 90, steps=4)
    page.mouse.up()
    dragged = layer.get_attribute("transform")
    assert dragged != zoomed
    page.mouse.wheel(0, -240)
    page.wait_for_function(
        "t => document.querySelector('#atlas > g').getAttribute('transform') !== t", arg=dragged
    )
    page.click("#zoom-reset")
    parent = str(models.path("llama-safetensors"))
    page.locator(f'#atlas .node[data-node="{parent}"] circle').click()
    panel = page.locator("#panel")
    panel.locator("h2", has_text="llama-safetensors").wait_for()
    assert "llama" in panel.inner_text() and "children" in panel.inner_text()
    page.locator("#atlas .edge .edge-hit").first.click()
    panel.locator("dt", has_text="decided by").wait_for()
    text = panel.inner_text()
    assert "derived" in text and "P(direction)" in text and "reasons" in text


def test_the_index_page_lists_and_filters(page: Any) -> None:
    page.goto("/index")
    assert page.locator("#records tbody tr").count() == 4
    page.select_option("select[name=family]", "llama")
    with page.expect_navigation():
        page.click(".filter button")
    assert "family=llama" in page.url and page.locator("#records tbody tr").count() == 4
