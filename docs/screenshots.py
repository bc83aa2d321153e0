"""Screenshots of ``forebear serve`` for the README and docs/web.md.

Builds the demo models (numpy only, ``forebear.demo``), indexes them, starts the web app
on 127.0.0.1 in this process and drives Debian's chromium through Playwright — the same
setup as tests/test_web_browser.py; nothing is downloaded. Writes PNGs to
docs/screenshots/: web-run.png (a comparison and its verdict), web-report.png,
web-atlas.png (an edge's evidence) and web-index.png.

    python docs/screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from forebear.demo import build_demo_models, build_demo_suspects
from forebear.index import Index, make_record
from forebear.web import WebSettings
from forebear.web.app import create_app
from forebear.web.server import background_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
INDEXED = ("llama-safetensors", "llama-Q8_0.gguf", "suspect-finetuned", "suspect-disguised",
           "suspect-independent", "gpt2-safetensors")  # fmt: skip
VIEWPORT = {"width": 1360, "height": 900}


def build(folder: Path) -> tuple[Path, Path]:
    """The demo models under ``folder / "models"`` and an index of six of them."""
    root = (folder / "models").resolve()
    build_demo_models(root)
    build_demo_suspects(root)
    index = folder / "index.sqlite"
    with Index.open(index) as opened:
        for name in INDEXED:
            opened.add(make_record(str(root / name), units=96))
    return root, index


def shoot(page: Page, out: Path, root: Path) -> list[Path]:
    page.goto("/")
    page.fill("#compare-a", "llama-safetensors")
    page.fill("#compare-b", "suspect-disguised")
    page.click("#compare-run")
    page.locator("#job-verdict").wait_for(state="visible")
    page.locator("#jobs tbody tr").first.wait_for()
    shots = [_save(page, out / "web-run.png", full=True)]
    page.click("#job-report-link")
    page.wait_for_load_state()
    shots.append(_save(page, out / "web-report.png"))
    page.goto("/atlas")
    page.locator("svg#atlas[data-ready]").wait_for(state="attached")
    page.locator("#atlas .edge.decided .edge-hit, #atlas .edge .edge-hit").first.click()
    page.locator("#panel dt", has_text="decided by").wait_for()
    shots.append(_save(page, out / "web-atlas.png"))
    page.goto("/index")
    shots.append(_save(page, out / "web-index.png"))
    return shots


def _save(page: Page, path: Path, *, full: bool = False) -> Path:
    page.screenshot(path=str(path), full_page=full)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "screenshots")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "forebear-demo",
        help="Scratch folder for the models (emptied first; its path shows).",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    try:
        root, index = build(args.work)
        app = create_app(WebSettings(roots=(root,), index=index, state=args.work / "state"))
        with background_server(app) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(base_url=url, viewport=VIEWPORT, device_scale_factor=1)
            for shot in shoot(page, args.out, root):
                print(shot)  # a script, not the library: it reports what it wrote
            browser.close()
    finally:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
