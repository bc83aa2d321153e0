"""The benchmark end to end on a hand-built zoo: random inits and noisy copies, no training."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from factories import make_hf_model
from forebear.bench.methods import METHODS, CosineBaseline, ExternalCommand, Method
from forebear.bench.report import to_json, to_markdown, write_report
from forebear.bench.run import ALL_RELATED, BenchmarkResult, run_benchmark
from forebear.cli.bench import bench_command
from forebear.zoo.manifest import Kind, Manifest, ModelEntry, derive_pairs, load_manifest

# name -> (kind, parents, transformation, seed of a fresh init or None for a noisy copy)
ZOO: dict[str, tuple[Kind, tuple[str, ...], str | None, int | None]] = {
    "base-a": ("base", (), None, 0),
    "base-b": ("base", (), None, 1),
    "base-c": ("base", (), None, 2),
    "a-ft": ("derived", ("base-a",), "light_finetune", None),
    "a-ft-ft": ("derived", ("a-ft",), "light_finetune", None),
    "b-ft": ("derived", ("base-b",), "light_finetune", None),
    "student": ("distilled", ("base-a",), "distillation", 3),
}

# A stand-in for another tool: p = 0.001 when b's folder name says "ft", else 0.5.
FAKE_TOOL = (
    "import json, sys, pathlib; b = pathlib.Path(sys.argv[2]).name; "
    "print(json.dumps({'result': {'p': 0.001 if 'ft' in b else 0.5}, 'a': sys.argv[1]}))"
)


def fake_tool() -> ExternalCommand:
    return ExternalCommand(
        name="fake-tool",
        argv=[sys.executable, "-c", FAKE_TOOL, "{a}", "{b}"],
        p_value_field="result.p",
        threshold=2.0,
        description="a fake external tool",
    )


def missing_tool() -> ExternalCommand:
    return ExternalCommand(
        name="missing-tool",
        argv=["forebear-test-no-such-tool", "compare", "{a}", "{b}", "--json"],
        score_field="score",
        threshold=0.5,
    )


def _write_model(folder: Path, config: dict[str, object], state: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(
        {k: np.ascontiguousarray(v) for k, v in state.items()}, str(folder / "model.safetensors")
    )


def _noisy(state: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: (a + 0.1 * a.std() * rng.standard_normal(a.shape)).astype(a.dtype)
        for name, a in state.items()
    }


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("zoo")
    states: dict[str, dict[str, np.ndarray]] = {}
    models = {}
    for index, (name, (kind, parents, transformation, seed)) in enumerate(ZOO.items()):
        if seed is not None:
            config, state = make_hf_model("llama", seed=seed)
        else:
            config, _ = make_hf_model("llama")
            state = _noisy(states[parents[0]], seed=100 + index)
        states[name] = state
        _write_model(root / "models" / name, config, state)
        models[name] = ModelEntry(
            name,
            f"models/{name}",
            "llama",
            kind,
            parents,
            transformation,
            seed=seed,
        )
    Manifest("toy", models, derive_pairs(models)).write(root / "manifest.json")
    return root


@pytest.fixture(scope="module")
def result(zoo: Path) -> BenchmarkResult:
    heard: list[tuple[str, int, int]] = []
    found = run_benchmark(
        load_manifest(zoo),
        [CosineBaseline(), fake_tool(), missing_tool()],
        progress=lambda *event: heard.append(event),
    )
    assert heard[-1] == ("missing-tool", 21, 21)
    return found


def test_methods_satisfy_the_protocol() -> None:
    assert isinstance(CosineBaseline(), Method)
    assert isinstance(fake_tool(), Method)
    assert isinstance(METHODS["baseline-cosine"](), CosineBaseline)


def test_baseline_separates_noisy_copies_from_independent_bases(result: BenchmarkResult) -> None:
    baseline = result.summaries[0]
    assert baseline.method == "baseline-cosine" and baseline.n_unscored == 0
    relations = {row.relation: row for row in baseline.relations}
    assert sorted(relations) == [ALL_RELATED, "ancestor", "light_finetune"]
    everything = relations[ALL_RELATED]
    assert (everything.n_pairs, everything.n_negative, everything.auroc) == (4, 14, 1.0)
    assert [tpr.tpr for tpr in everything.tpr] == [1.0, 1.0]
    assert all(tpr.below_resolution for tpr in everything.tpr)  # 14 negatives: FPR steps of 1/14
    assert everything.detected == 4
    assert baseline.false_positives is not None and baseline.false_positives.count == 0
    assert baseline.derived_verdicts_on_independent == 0
    assert baseline.calibration is None  # a score method has no p-values
    assert baseline.attribution is not None
    assert (baseline.attribution.hits, baseline.attribution.total) == (3, 3)
    # The student shares no weights with its teacher: the baseline cannot see it.
    assert baseline.behaviour_only is not None
    assert (baseline.behaviour_only.n_pairs, baseline.behaviour_only.detected) == (3, 0)
    assert baseline.bytes_read is not None and baseline.bytes_read > 0
    assert baseline.peak_rss_mb is not None and baseline.peak_rss_mb > 0


def test_baseline_reads_every_matrix_of_both_models(zoo: Path) -> None:
    found = CosineBaseline().compare(zoo / "models/base-a", zoo / "models/a-ft")
    _, state = make_hf_model("llama")
    matrices = sum(a.nbytes for a in state.values() if a.ndim >= 2)
    assert found.verdict == "derived" and found.score is not None and found.score > 0.99
    assert found.bytes_read == 2 * matrices
    assert found.error is None and found.p_value is None


def test_baseline_reports_an_unreadable_folder(tmp_path: Path, zoo: Path) -> None:
    found = CosineBaseline().compare(tmp_path, zoo / "models/base-a")
    assert (found.verdict, found.score) == ("unavailable", None)
    assert found.error is not None and str(tmp_path) in found.error


def test_p_value_method_is_calibrated_on_independent_pairs(result: BenchmarkResult) -> None:
    fake = result.summaries[1]
    independent = [p for p in result.pairs["fake-tool"] if p.label == "independent"]
    small = sum(1 for p in independent if "ft" in p.b)
    assert fake.calibration is not None
    assert [row.count for row in fake.calibration.rows] == [small, small, 0]
    assert fake.calibration.rows[0].exceeds  # 8 of 14 below 0.05 is no accident
    for pair in independent:
        assert pair.result.p_value is not None
        assert pair.result.score == pytest.approx(-np.log10(pair.result.p_value))
    assert fake.false_positives is not None and fake.false_positives.count == small
    assert fake.bytes_read is None


def test_missing_tool_is_unavailable_without_crashing(result: BenchmarkResult) -> None:
    missing = result.summaries[2]
    assert missing.n_unscored == missing.n_pairs == 21
    assert missing.errors == ("'forebear-test-no-such-tool' is not installed (not found on PATH)",)
    assert {p.result.verdict for p in result.pairs["missing-tool"]} == {"unavailable"}
    assert all(row.auroc is None and row.tpr == () for row in missing.relations)
    assert missing.attribution is None and missing.false_positives is None


def test_report_files_hold_every_field(result: BenchmarkResult, tmp_path: Path) -> None:
    files = write_report(result, tmp_path / "results")
    assert files.json.name == "zoo-toy.json" and files.markdown.name == "zoo-toy.md"
    data = json.loads(files.json.read_text())
    assert data == json.loads(json.dumps(to_json(result)))
    assert data["schema"] == "forebear.bench.report/1" and data["profile"] == "toy"
    assert data["environment"]["packages"]["numpy"] == np.__version__
    assert {"platform", "python", "cpu_count"} <= set(data["environment"])
    assert [m["method"] for m in data["methods"]] == [
        "baseline-cosine",
        "fake-tool",
        "missing-tool",
    ]
    fields = {
        "relations", "behaviour_only", "false_positives", "calibration", "attribution",
        "median_seconds", "max_seconds", "bytes_read", "peak_rss_mb", "errors",
    }  # fmt: skip
    assert all(fields <= set(m) for m in data["methods"])
    assert data["methods"][1]["calibration"]["calibrated"] is False
    assert len(data["pairs"]["baseline-cosine"]) == 21
    markdown = files.markdown.read_text()
    assert markdown == to_markdown(result)
    assert "| method | relation | pairs | AUROC | TPR @ FPR ≤ 1.0% | TPR @ FPR ≤ 0.1% |" in markdown
    assert "| baseline-cosine | all related | 4 | 1.000 | 1.00 † | 1.00 † | 4/4 | 0 |" in markdown
    assert "| baseline-cosine | 3/3 | 1.000 | none |" in markdown
    assert "missing-tool (unavailable)" in markdown
    assert "## Calibration" in markdown and "| fake-tool | 0.05 | 8/14 |" in markdown


def test_external_command_failures_are_unavailable(tmp_path: Path) -> None:
    def tool(code: str, **kwargs: object) -> ExternalCommand:
        argv = [sys.executable, "-c", code, "{a}", "{b}"]
        return ExternalCommand("t", argv, threshold=1.0, score_field="s", **kwargs)  # type: ignore[arg-type]

    def error(method: ExternalCommand) -> str | None:
        found = method.compare(tmp_path, tmp_path)
        assert (found.verdict, found.score) == ("unavailable", None)
        return found.error

    assert error(tool("print('hello')")) == "output is not JSON"
    assert error(tool("print('{\"t\": 1}')")) == "no field 's' in the JSON output"
    assert error(tool("print('{\"s\": true}')")) == "field 's' is True, not a number"
    assert error(tool("import sys; sys.exit('boom')")) == "exit status 1: boom"
    assert error(tool("import time; time.sleep(5)", timeout_s=0.5)) == "timed out after 0.5 s"


def test_external_command_verdicts_and_placeholders(tmp_path: Path) -> None:
    code = "import json, sys; print(json.dumps({'s': 3, 'v': 'DERIVED', 'x': sys.argv[1:]}))"
    method = ExternalCommand(
        "t", [sys.executable, "-c", code, "{a}", "--b={b}"], 5.0, score_field="s", verdict_field="v"
    )
    assert method.command_line(Path("x"), Path("y"))[-2:] == ["x", "--b=y"]
    found = method.compare(tmp_path, tmp_path)
    assert (found.score, found.verdict, found.p_value, found.bytes_read) == (
        3.0,
        "derived",
        None,
        None,
    )
    by_threshold = ExternalCommand("t", method.argv, 5.0, score_field="s").compare(
        tmp_path, tmp_path
    )
    assert by_threshold.verdict == "independent"
    with pytest.raises(ValueError, match="needs a score_field or a p_value_field"):
        ExternalCommand("t", ["x"], 1.0)


def test_null_score_is_a_declined_score_only_next_to_a_verdict(tmp_path: Path) -> None:
    code = "import json; print(json.dumps({'s': None, 'v': 'independent'}))"
    argv = [sys.executable, "-c", code]
    with_verdict = ExternalCommand("t", argv, 1.0, score_field="s", verdict_field="v")
    found = with_verdict.compare(tmp_path, tmp_path)
    assert (found.score, found.verdict, found.error) == (None, "independent", None)
    without = ExternalCommand("t", argv, 1.0, score_field="s").compare(tmp_path, tmp_path)
    assert (without.verdict, without.error) == ("unavailable", "field 's' is None, not a number")


def test_modeldna_adapter_runs_suspect_then_candidate_and_maps_its_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in `modeldna` on PATH that answers as modelDNA 0.1 does, echoing its arguments.
    script = tmp_path / "modeldna"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "classes = {'child': 'FINE_TUNE', 'odd': 'SAME_FAMILY_UNRESOLVED'}\n"
        "verdict = classes.get(sys.argv[2], 'NO_MATCH')\n"
        "probability = None if sys.argv[2] == 'wide' else 0.97\n"
        "print(json.dumps({'argv': sys.argv[1:], 'bytes_read': 4096,\n"
        "                  'verdict': {'verdict': verdict, 'probability': probability}}))\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    method = METHODS["modeldna"]()
    assert method.command_line(Path("parent"), Path("child"))[1:] == [  # type: ignore[attr-defined]
        "compare", "child", "parent", "--json",
    ]  # fmt: skip
    answers = {b: method.compare(Path("parent"), Path(b)) for b in ("child", "odd", "wide")}
    assert answers["child"].verdict == "derived" and answers["child"].score == 0.97
    assert answers["child"].bytes_read == 4096
    assert answers["odd"].verdict == "inconclusive"
    assert (answers["wide"].verdict, answers["wide"].score) == ("independent", None)


def test_cli_prints_the_table_and_writes_results(zoo: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(bench_command)
    runner = CliRunner()
    out = tmp_path / "results"
    done = runner.invoke(app, ["--zoo", str(zoo), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "| baseline-cosine | all related | 4 | 1.000 |" in done.stdout
    assert (out / "zoo-toy.json").is_file() and (out / "zoo-toy.md").is_file()
    as_json = runner.invoke(app, ["--zoo", str(zoo), "--out", str(out), "--format", "json"])
    assert json.loads(as_json.stdout)["methods"][0]["method"] == "baseline-cosine"
    unknown = runner.invoke(app, ["--zoo", str(zoo), "--method", "nope"])
    assert unknown.exit_code == 2
    assert "unknown method 'nope'; known: baseline-cosine" in unknown.output
