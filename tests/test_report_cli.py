"""``--report`` on compare, scan and tree, and the demo's report: the file written, a bad
suffix refused before the slow work, the command line recorded."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest

from forebear.cli import main
from forebear.demo import MAIN_SUSPECT, REFERENCE
from forebear.report import load_report


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    folder = tmp_path_factory.mktemp("demo") / "out"
    buffer = io.StringIO()  # module scope has no capsys: read the demo's JSON from stdout
    with contextlib.redirect_stdout(buffer):
        assert main(["demo", str(folder), "--format", "json"]) == 0
    return folder, json.loads(buffer.getvalue())


def test_demo_writes_its_report(demo: tuple[Path, dict[str, object]]) -> None:
    folder, data = demo
    assert data["reports"] == [str(folder / f"report.{s}") for s in ("html", "md", "json")]
    report = load_report(folder / "report.json")
    assert report.kind == "compare" and report.verdict.startswith("derived")
    assert report.result["b"].endswith(MAIN_SUSPECT)
    assert [i.kind for i in report.reproducibility.inputs] == ["folder", "folder"]
    html = (folder / "report.html").read_text()
    assert "<svg" in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )


def test_demo_text_says_how_to_open_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["demo", str(tmp_path / "d")], capsys)
    assert code == 0, err
    assert (tmp_path / "d" / "report.html").as_uri() in out
    assert "make serve" in out and "forebear serve" in out and "127.0.0.1:8000" in out


@pytest.mark.parametrize("suffix", ["html", "md", "json"])
def test_compare_writes_a_report(
    suffix: str, demo: tuple[Path, dict[str, object]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    folder, _ = demo
    a, b = str(folder / REFERENCE), str(folder / "suspect-finetuned")
    target = tmp_path / f"r.{suffix}"
    argv = ["compare", a, b, "--fast", "--report", str(target)]
    monkeypatch.setattr(sys, "argv", ["/somewhere/forebear", *argv])
    code, _out, err = run(argv, capsys)
    assert code == 3, err
    assert f"report written to {target}" in err
    text = target.read_text()
    assert "forebear compare" in text and "derived" in text
    if suffix == "json":
        report = load_report(target)
        assert report.reproducibility.command == "forebear " + " ".join(argv)
        assert report.reproducibility.settings["fast"] is True


def test_bad_suffix_fails_before_comparing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("compared before the suffix was checked")

    monkeypatch.setattr("forebear.cli.compare.compare", never)
    target = tmp_path / "out.pdf"
    code, out, err = run(["compare", "x", "y", "--report", str(target)], capsys)
    assert code == 1 and out == ""
    assert err == (f"forebear: error: {target}: a report cannot be written with suffix '.pdf' — "
                   "name the report .html (one self-contained page), .md or .json\n")  # fmt: skip
    assert not target.exists()


@pytest.mark.parametrize("command", [["scan", "m", "--index", "absent.db"], ["tree", "a", "b"]])
def test_scan_and_tree_refuse_a_bad_suffix_first(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run([*command, "--report", str(tmp_path / "r.txt")], capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "suffix '.txt'" in err  # not the missing index or models


def test_tree_writes_a_report(
    demo: tuple[Path, dict[str, object]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = demo
    models = [
        str(folder / name) for name in (REFERENCE, "suspect-finetuned", "suspect-independent")
    ]
    target = tmp_path / "tree.html"
    code, _out, err = run(["tree", *models, "--report", str(target), "-q"], capsys)
    assert code == 0, err
    html = target.read_text()
    assert "The lineage forest" in html and "<svg" in html
