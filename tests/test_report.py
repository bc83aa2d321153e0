"""Evidence reports: the report object (golden files), its renderings, hostile names, files.

The results reported on are built by hand (deterministic, no model needed); the real
comparison is exercised in ``test_report_cli.py``. Refresh the golden files with
``FOREBEAR_UPDATE_GOLDEN=1 pytest tests/test_report.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forebear.compare.result import Comparison, LayerEvidence, Ledger, LedgerLayer
from forebear.errors import ForebearError, InputNotFoundError, UnsupportedFormatError
from forebear.index.card import CardClaims
from forebear.index.record import IndexRecord
from forebear.lineage.tree import Edge, Lineage
from forebear.report import (
    Report,
    comparison_report,
    load_report,
    render,
    report_format,
    scan_report,
    tree_report,
    write_report,
)
from forebear.report.provenance import command_line, describe_input
from forebear.report.render import markdown_text
from forebear.scan import CardCheck, ScanMatch, ScanResult

GOLDEN = Path(__file__).parent / "golden" / "report"
HOSTILE = "<script>alert(1)</script>"
CREATED = "2025-01-02T03:04:05+00:00"
ENVIRONMENT = {"forebear": "0.0.test", "python": "3.x", "numpy": "2.x"}
FIXED: dict[str, Any] = {"created": CREATED, "environment": ENVIRONMENT}


def cell(b: int, a: int, log10_p: float, quality: float = 0.9) -> LayerEvidence:
    return LayerEvidence(
        a_layer=a, b_layer=b, module_a="mlp", module_b="mlp",
        log10_p_same_position=log10_p / 2, log10_p_matched=log10_p, z_same_position=3.0,
        z_matched=9.0, match_quality=quality, relative_delta=0.1, units_sampled=96,
        log10_p_attention=-4.0,
    )  # fmt: skip


def comparison(a: str = f"org/{HOSTILE}", b: str = "evil & 'quoted' | *md* [x](javascript:y)",
               verdict: Any = "derived: structurally modified") -> Comparison:  # fmt: skip
    """B (3 layers) from A (4 layers): A's layer 2 dropped, B's layer 2 new."""
    evidence = tuple(
        cell(j, i, -40.0 if (j, i) in ((0, 0), (1, 1)) else -0.3, 0.95 if i == j else 0.2)
        for j in range(3) for i in range(4) if (j, i) != (2, 3)
    )  # fmt: skip
    layers = (
        LedgerLayer(0, 0, -40.0, 0.1, 1000),
        LedgerLayer(1, 1, -40.0, 0.12, 1000),
        LedgerLayer(2, None, None, None, 1000),
    )
    ledger = Ledger(0.7, 0.11, layers, (2,), (2, 3), (), 300, 5, (96,) * 4, (96,) * 3, 1)
    modules = {
        "embeddings": {"kind": "alignment statistic (ranks, never decides)", "fit": 0.98,
                       "shared_tokens": 300},
        "mlp": {"kind": "exact (same-position units)", "log10_p": -41.5,
                "b_layers_with_evidence": [0, 1], "b_layers_tested": 2},
        "attention": {"kind": "exact (same-position value rows)", "log10_p": -8.0,
                      "b_layers_with_evidence": [0, 1], "b_layers_tested": 2},
    }  # fmt: skip
    return Comparison(
        a=a, b=b, verdict=verdict, log10_p=-42.25, null="exact: a stated null",
        reasons=("shared initialisation: log10 p = -42.2", f"card says {HOSTILE}"),
        cannot_see=("distillation: not seen",), families=("llama", "llama"),
        residual={"source": "token strings", "shared_tokens": 300, "rows_used": 300,
                  "fit": 0.98, "identity_like": True},
        evidence=evidence, layer_map=(0, 1, None), modules=modules, ledger=ledger,
        tests={"same-position, Fisher over layers": -42.25, "matched units": -40.0},
        bytes_read=1 << 20, seconds=1.5, fast=False,
        settings={"max_units": 512, "fast": False, "units_all_pairs": 96},
    )  # fmt: skip


def record(ref: str) -> IndexRecord:
    return IndexRecord(ref, None, 2, "llama", {"hidden": 64}, CardClaims(),
                       np.zeros(4, np.float32))  # fmt: skip


def scan_result() -> ScanResult:
    parent = comparison(a="org/base", b="query", verdict="derived: light fine-tune")
    stranger = comparison(a="org/other", b="query", verdict="independent")
    stranger = Comparison(**{**vars(stranger), "log10_p": -0.2})
    matches = (ScanMatch(record("org/base"), 0.93, parent),
               ScanMatch(record("org/other"), 0.41, stranger))  # fmt: skip
    card = CardClaims(from_scratch=True, evidence=f"trained from scratch {HOSTILE}")
    checks = (CardCheck(f"trained from scratch ({HOSTILE!r})", "contradicted",
                        "derived: light fine-tune of org/base (log10 p = -42.2)"),)  # fmt: skip
    return ScanResult("query", 10, 8, matches, matches[0], card, checks,
                      {"fingerprint": 0.1, "retrieval": 0.01, "tests": 0.2})  # fmt: skip


def lineage() -> Lineage:
    def edge(parent: str, child: str, p: float, by: str, **extra: Any) -> Edge:
        relation = extra.pop("relation", "derived: light fine-tune")
        return Edge(parent, child, relation, -30.0, 0.1, p, extra.pop("p_priors", None), by,
                    (), **extra)  # fmt: skip

    edges = (
        edge("base", "chat", 0.97, "weights", attached_by="priors", alternatives=(HOSTILE,)),
        edge("base", HOSTILE, 0.6, "undetermined", alternatives=("chat",)),
        edge("base", "merged", 0.999, "weights", relation="merge", weight=0.6),
        edge("chat", "merged", 0.999, "weights", relation="merge", weight=0.4),
        edge("other", "other-q4", 0.8, "priors", p_priors=0.95),
    )
    models = ("base", "chat", HOSTILE, "merged", "other", "other-q4", "alone")
    families = (("base", "chat", HOSTILE, "merged"), ("other", "other-q4"), ("alone",))
    return Lineage(models, families, edges, (), ("a warning",), 21, 3.0)


def reports(tmp_path: Path) -> dict[str, Report]:
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"forebear")
    inputs = ("weights.safetensors", "org/model@abc123", "https://example.org/m.gguf")
    command = ["forebear", "compare", "a", "b", "--token", "hf_secret"]
    cwd = Path.cwd()
    os.chdir(tmp_path)  # inputs named relative to here, so the golden file holds no tmp path
    try:
        return {
            "compare": comparison_report(comparison(), command=command, inputs=inputs, **FIXED),
            "scan": scan_report(scan_result(), inputs=inputs[1:], settings={"top": 2}, **FIXED),
            "tree": tree_report(lineage(), inputs=inputs[1:2], **FIXED),
        }
    finally:
        os.chdir(cwd)


@pytest.fixture
def made(tmp_path: Path) -> dict[str, Report]:
    return reports(tmp_path)


# ---------------------------------------------------------------- the report object


@pytest.mark.parametrize("kind", ["compare", "scan", "tree"])
def test_report_object_matches_golden_file(kind: str, made: dict[str, Report]) -> None:
    data = made[kind].to_json()
    path = GOLDEN / f"{kind}.json"
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("FOREBEAR_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8")) == data, (
        f"{path} differs; if the change is intended: FOREBEAR_UPDATE_GOLDEN=1 pytest {__file__}"
    )


@pytest.mark.parametrize("kind", ["compare", "scan", "tree"])
def test_json_round_trips_exactly(kind: str, made: dict[str, Report], tmp_path: Path) -> None:
    report = made[kind]
    assert Report.from_json(report.to_json()) == report
    assert load_report(write_report(report, tmp_path / "r.json")) == report
    assert json.loads(render(report, "json")) == report.to_json()


def test_comparison_report_content(made: dict[str, Report]) -> None:
    report = made["compare"]
    assert report.kind == "compare" and report.verdict == "derived: structurally modified"
    assert report.headline.startswith("evil & 'quoted'")
    assert "statistically consistent with derivation from org/" in report.headline
    assert "below 1e-42" in report.headline
    assert report.finding is not None and report.finding.null == "exact: a stated null"
    assert "independently" in report.finding.hypothesis
    topics = [line.split(":")[0] for line in report.cannot_see]
    assert topics == ["distillation", "training data", "weight evidence only"]
    heatmap, modules, ledger, quality = report.figures
    assert heatmap.type == "heatmap" and heatmap.path == ((0, 0), (1, 1))
    assert heatmap.values[2][3] is None and heatmap.values[0][0] == 40.0
    assert [b.label for b in modules.bars] == ["mlp", "attention"]  # type: ignore[union-attr]
    assert ledger.bars[-1].segments[-1].value == 1.0  # type: ignore[union-attr]  # B 2 is new
    assert len(quality.bars) == 2  # type: ignore[union-attr]
    repro = report.reproducibility
    assert repro.command == "forebear compare a b --token '***'"
    assert repro.created == CREATED and repro.versions == ENVIRONMENT
    file, hub, url = repro.inputs
    assert file.files[0].sha256 == hashlib.sha256(b"forebear").hexdigest()
    assert (hub.kind, hub.revision, url.kind) == ("hub", "abc123", "url")


def test_scan_report_flags_the_contradicted_card(made: dict[str, Report]) -> None:
    report = made["scan"]
    assert report.facts[0].startswith("card: trained from scratch")
    checks = next(t for t in report.tables if t.title.startswith("The model card"))
    assert checks.flagged == (0,)
    assert "Tested on fingerprints" in report.headline
    assert any(line.startswith("the index") for line in report.cannot_see)


def test_tree_report_styles_edges(made: dict[str, Report]) -> None:
    (forest,) = made["tree"].figures
    styles = {(e.parent, e.child): e.style for e in forest.edges}  # type: ignore[union-attr]
    assert styles[("base", HOSTILE)] == "undetermined"
    assert styles[("base", "merged")] == styles[("chat", "merged")] == "merge"
    assert styles[("other", "other-q4")] == "priors"
    assert styles[("base", "chat")] == "priors"  # decided by the weights, attached by a card
    assert "3 families" in made["tree"].verdict and "1 merge" in made["tree"].verdict


# ---------------------------------------------------------------- renderings


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.data: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]

    def handle_data(self, data: str) -> None:
        self.data.append(data)


def parsed(html: str) -> Tags:
    found = Tags()
    found.feed(html)
    return found


@pytest.mark.parametrize("kind", ["compare", "scan", "tree"])
def test_html_is_self_contained_and_escaped(kind: str, made: dict[str, Report]) -> None:
    html = render(made[kind], "html")
    found = parsed(html)
    assert "script" not in found.tags and "link" not in found.tags and "iframe" not in found.tags
    assert not [link for link in found.links if not link.startswith("#")]
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "style" in found.tags and "svg" in found.tags
    assert any(HOSTILE in data for data in found.data)  # shown, as text
    for svg in html.split("<svg")[1:]:  # every plot is well-formed XML
        ET.fromstring("<svg" + svg.split("</svg>")[0] + "</svg>")


@pytest.mark.parametrize("kind", ["compare", "scan", "tree"])
def test_markdown_escapes_untrusted_text(kind: str, made: dict[str, Report]) -> None:
    text = render(made[kind], "markdown")
    assert HOSTILE not in text and "<script" not in text
    assert "[x](javascript" not in text
    assert "What this test cannot see" in text and "## Reproducibility" in text
    assert "hf_secret" not in text


def test_html_holds_the_sections_a_reader_needs(made: dict[str, Report]) -> None:
    html = render(made["compare"], "html")
    for needed in ("What this test cannot see", "Null hypothesis", "Reproducibility",
                   "Layer-by-layer evidence", "Innovation ledger", "Unit-matching quality",
                   "Which modules carry the evidence", "alignment path", "<title>"):  # fmt: skip
        assert needed in html, needed
    assert "hf_secret" not in html
    tree = render(made["tree"], "html")
    assert 'stroke-dasharray="7 4"' in tree and 'stroke-dasharray="2 3"' in tree


names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@settings(max_examples=40)
@given(name=names)
def test_any_model_name_stays_text(name: str) -> None:
    report = comparison_report(comparison(a=name, b="b"), **FIXED)
    benign = comparison_report(comparison(a="a", b="b"), **FIXED)
    assert parsed(render(report, "html")).tags == parsed(render(benign, "html")).tags
    shown = markdown_text(name)
    assert "<" not in shown and "\n" not in shown


# ---------------------------------------------------------------- files


def test_suffix_names_the_format(tmp_path: Path) -> None:
    assert report_format("a.HTML") == "html" and report_format("a.htm") == "html"
    assert report_format("a.md") == "markdown" and report_format("a.json") == "json"
    with pytest.raises(ForebearError) as error:
        report_format(tmp_path / "out.pdf")
    assert str(error.value) == (
        f"{tmp_path / 'out.pdf'}: a report cannot be written with suffix '.pdf' — name the "
        "report .html (one self-contained page), .md or .json"
    )


def test_write_is_atomic_and_never_clobbers(
    made: dict[str, Report], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "r.html"
    target.write_text("the old report")

    def broken(*args: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("os.fsync", broken)
    with pytest.raises(RuntimeError):
        write_report(made["compare"], target)
    assert target.read_text() == "the old report"
    assert [p.name for p in folder.iterdir()] == ["r.html"]  # no temporary left
    monkeypatch.undo()
    assert write_report(made["compare"], target) == target
    assert target.read_text().startswith("<!DOCTYPE html>")


def test_write_into_a_missing_folder(made: dict[str, Report], tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="the report's folder does not exist"):
        write_report(made["tree"], tmp_path / "nope" / "r.md")


def test_load_report_names_the_bad_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="no such report file"):
        load_report(tmp_path / "absent.json")
    for text in ("not json", '{"format": "something else"}', '{"format": "forebear-report"}'):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(UnsupportedFormatError) as error:
            load_report(bad)
        assert str(error.value).startswith(f"{bad}: not a forebear JSON report")
    truncated = tmp_path / "cut.json"
    truncated.write_text(json.dumps({"format": "forebear-report", "version": 1, "kind": "tree"}))
    with pytest.raises(UnsupportedFormatError, match="missing field 'finding'"):
        load_report(truncated)


# ---------------------------------------------------------------- provenance


def test_command_line_hides_tokens() -> None:
    assert command_line(["forebear", "scan", "m", "--token", "s3cret"]) == (
        "forebear scan m --token '***'"
    )
    assert command_line(["forebear", "scan", "--token=s3cret", "a b"]) == (
        "forebear scan '--token=***' 'a b'"
    )


def test_inputs_are_described_and_hashed(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    (folder / "README.md").write_text("not hashed")
    described = describe_input(folder)
    assert described.kind == "folder" and [f.path for f in described.files] == ["model.safetensors"]
    assert describe_input(folder / "model.safetensors", hash_limit=5).files[0].sha256 is None
    assert describe_input("org/name").kind == "hub" and describe_input("org/name").note
    assert describe_input(tmp_path / "absent").kind == "missing"
