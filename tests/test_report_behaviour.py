"""The behaviour probe's report: its object (golden file), the three questions, the HTML and
Markdown renderings with hostile model names, and ``forebear probe --report`` on tiny
local models. The result reported on is built by hand (exact counts, no model); refresh
the golden file with ``FOREBEAR_UPDATE_GOLDEN=1 pytest tests/test_report_behaviour.py``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from forebear import __version__
from forebear.behavior.agreement import ControlTest, agreement
from forebear.behavior.identity import IdentityTest
from forebear.behavior.prompts import ProbeSet
from forebear.behavior.result import CandidateResult, ProbeResult, Settings
from forebear.cli import main
from forebear.report import Report, load_report, probe_report, render, write_report
from forebear.stats import holm_adjusted
from test_report import FIXED, GOLDEN, HOSTILE, parsed

PARENT, OTHER = f"org/{HOSTILE}", "evil & 'quoted' | *md* [x](javascript:y)"
CONTROL, SUSPECT = "control-1", f"http://127.0.0.1:9/v1#{HOSTILE}"
ALPHA = 0.01


def _candidate(name: str, tests: tuple[ControlTest, ...], adjusted: list[float], hits: int,
               disagreements: int) -> CandidateResult:  # fmt: skip
    identity = IdentityTest.start(name).look(disagreements, 200 - disagreements, [])
    closer = all(a <= -2 for a in adjusted)
    return CandidateResult(
        name, agreement(name, hits, 200), tests, tuple(adjusted),
        "closer" if closer else "not_closer", identity, identity.verdict(ALPHA),
        decided_at=150 if closer else 200, identity_decided_at=100,
    )  # fmt: skip


def probe_result(*, same_data: bool = False) -> ProbeResult:
    """The suspect copies PARENT on most prompts; OTHER is kept up with by the control."""
    parent = (ControlTest(CONTROL, 0.1).look(70, 6), ControlTest(OTHER, 0.1).look(66, 8))
    other = (ControlTest(CONTROL, 0.1).look(12, 14), ControlTest(PARENT, 0.1).look(8, 66))
    adjusted = holm_adjusted([t.log10_p for t in (*parent, *other)])
    candidates = (_candidate(PARENT, parent, adjusted[:2], 150, 50),
                  _candidate(OTHER, other, adjusted[2:], 40, 160))  # fmt: skip
    settings = Settings(budget=200, batch=50, alpha=ALPHA, margin=0.1, tolerance=0.02,
                        identity_margin=0.1, top_k=0, seed=3, same_data_controls=same_data,
                        candidates_as_controls=True)  # fmt: skip
    probes = ProbeSet(("def main(", "class Error", f"{HOSTILE}("), "hand-written", None, 0.0)
    queries = {SUSPECT: 200, PARENT: 200, OTHER: 200, CONTROL: 200}
    return ProbeResult(SUSPECT, candidates, (agreement(CONTROL, 36, 200),), probes, 200,
                       queries, "decisive", settings)  # fmt: skip


@pytest.fixture
def made() -> Report:
    command = ["forebear", "probe", SUSPECT, "--candidates", PARENT, "--api-key", "sk-secret"]
    return probe_report(probe_result(), command=command, inputs=(SUSPECT,), **FIXED)


def test_probe_report_matches_golden_file(made: Report) -> None:
    data = made.to_json()
    path = GOLDEN / "probe.json"
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("FOREBEAR_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert _same(json.loads(path.read_text(encoding="utf-8")), data), (
        f"{path} differs; if the change is intended: FOREBEAR_UPDATE_GOLDEN=1 pytest {__file__}"
    )
    assert Report.from_json(data) == made
    assert __version__ not in json.dumps(data["result"])  # versions: reproducibility's only


def _same(stored: Any, made: Any) -> bool:
    """Equal, floats to 1e-9 relative: the probe's p-values come through scipy, whose last
    digits may move between versions and platforms (the words and structure may not)."""
    if isinstance(stored, float) and isinstance(made, float):
        return made == pytest.approx(stored, rel=1e-9, abs=1e-12)
    if isinstance(stored, dict) and isinstance(made, dict):
        return stored.keys() == made.keys() and all(_same(stored[k], made[k]) for k in stored)
    if isinstance(stored, list) and isinstance(made, list):
        pairs = zip(stored, made, strict=False)
        return len(stored) == len(made) and all(_same(a, b) for a, b in pairs)
    return bool(stored == made)


def test_probe_report_names_its_evidence_and_the_three_questions(made: Report) -> None:
    assert made.kind == "probe" and made.verdict == "behaviour: derived"
    assert made.headline.startswith("Behavioural evidence (not weight evidence):")
    assert made.finding is not None and made.finding.p_text.startswith(PARENT)
    questions, candidates, controls = made.tables
    assert [row[0] for row in questions.rows] == ["identity", "derivation", "distillation"]
    assert questions.rows[1][2] == f"closer than every control to: {PARENT}"
    assert questions.rows[2][2].startswith("not asked")
    assert [row[3] for row in candidates.rows] == ["closer", "not closer"]
    assert len(controls.rows) == 4
    assert made.cannot_see[-1].startswith("behavioural evidence only")
    assert made.reproducibility.command is not None and "sk-secret" not in str(made.to_json())
    answered = probe_report(probe_result(same_data=True), **FIXED).tables[0]
    assert answered.rows[2][2] == PARENT  # same-data controls: distillation answered


def test_probe_html_is_self_contained_and_escaped(made: Report) -> None:
    html = render(made, "html")
    found = parsed(html)
    assert "script" not in found.tags and "link" not in found.tags and "iframe" not in found.tags
    assert not [link for link in found.links if not link.startswith("#")]
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert any(HOSTILE in data for data in found.data)
    for needed in ("Behavioural evidence", "Which question each number answers", "identity",
                   "derivation", "distillation", "What this test cannot see",
                   "behavioural evidence only", "Reproducibility"):  # fmt: skip
        assert needed in html, needed
    text, _, command = render(made, "markdown").partition("**Command:**")
    assert HOSTILE not in text and "[x](javascript" not in text
    assert command.lstrip().startswith("```") and "--api-key '***'" in command  # verbatim
    assert "Which question each number answers" in text


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A random-init llama, a copy of it (the suspect) and two independent ones."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from behavior_models import probe_models

    made = probe_models(tmp_path_factory.mktemp("probe-report"))
    return {name: str(path) for name, path in made.items()}


@pytest.mark.parametrize("suffix", ["html", "json"])
def test_cli_probe_writes_a_report(
    suffix: str, tiny: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    target = tmp_path / f"probe.{suffix}"
    argv = ["probe", tiny["copy"], "--candidates", tiny["parent"], "--controls",
            f"{tiny['control-a']},{tiny['control-b']}", "--budget", "100", "--batch", "50",
            "--report", str(target), "-f", "json"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["/somewhere/forebear", *argv])
    code, out, err = run(argv, capsys)
    assert code == 3, err
    assert f"report written to {target}" in err and json.loads(out)["verdict"] == "derived"
    if suffix == "html":
        html = target.read_text(encoding="utf-8")
        assert "Behavioural evidence" in html and "Which question each number answers" in html
        return
    report = load_report(target)
    assert report.kind == "probe" and report.verdict == "behaviour: derived"
    assert report.reproducibility.command == "forebear " + " ".join(argv)
    assert [i.kind for i in report.reproducibility.inputs] == ["folder"] * 4
    assert report.result["candidates"][0]["identity"]["verdict"] in ("same", "undetermined")


def test_cli_probe_refuses_a_bad_report_suffix_before_probing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("probed before the suffix was checked")

    monkeypatch.setattr("forebear.behavior.probe.probe", never)
    target = tmp_path / "out.pdf"
    code, out, err = run(["probe", "x", "--candidates", "y", "--report", str(target)], capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "suffix '.pdf'" in err
    assert not target.exists()


def test_write_and_load_round_trip(made: Report, tmp_path: Path) -> None:
    assert load_report(write_report(made, tmp_path / "probe.json")) == made
    data: dict[str, Any] = json.loads(render(made, "json"))
    assert data["kind"] == "probe" and data["result"]["kind"] == "behaviour"
