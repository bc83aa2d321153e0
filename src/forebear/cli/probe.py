"""``forebear probe SUSPECT --candidates A --candidates B [--controls C …]``: behavioural
evidence that SUSPECT is, derives from or was distilled from a candidate.

A model is a local model folder or an OpenAI-compatible endpoint written
``http://host:port/v1#model-name`` (key: ``--api-key`` or ``FOREBEAR_API_KEY``).
``--candidates`` and ``--controls`` repeat, or take comma-separated lists. Exit codes
say the verdict: 0 no candidate, 3 closer to a candidate than to every control
(derived or distilled), 4 inconclusive, 1 error (one line on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from forebear.behavior.cache import ResponseCache
from forebear.behavior.references import open_client
from forebear.cli.output import Format, Output
from forebear.errors import ForebearError

__all__ = ["parse_models", "probe_command", "render_probe"]

EXIT_NONE, EXIT_ERROR, EXIT_DERIVED, EXIT_INCONCLUSIVE = 0, 1, 3, 4


def _progress(message: str) -> None:
    typer.echo(f"probe: {message}", err=True)


def parse_models(values: list[str] | None) -> list[str]:
    """Repeated options and comma-separated lists, flattened; duplicates refused."""
    found = [part.strip() for value in values or [] for part in value.split(",") if part.strip()]
    if len(set(found)) != len(found):
        raise ForebearError("a model is named twice", hint="name each model once")
    return found


def probe_command(
    suspect: Annotated[
        str,
        typer.Argument(help="The model under question: a model folder or http://host/v1#model."),
    ],
    candidates: Annotated[
        list[str] | None,
        typer.Option("--candidates", "-c", help="Candidate origins (repeat, or a,b,c)."),
    ] = None,
    controls: Annotated[
        list[str] | None,
        typer.Option("--controls", help="Independent control models (repeat, or a,b,c)."),
    ] = None,
    budget: Annotated[int, typer.Option("--budget", help="Most prompts per model.")] = 2000,
    batch: Annotated[int, typer.Option("--batch", help="Prompts between two looks.")] = 100,
    alpha: Annotated[float, typer.Option("--alpha", help="Error rate of each verdict.")] = 0.01,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the probe prompts.")] = 0,
    cache: Annotated[
        Path | None, typer.Option("--cache", help="Response cache file (SQLite), reused.")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Ask for top-k log-probabilities.")] = 0,
    same_data: Annotated[
        bool,
        typer.Option("--same-data-controls", help="The controls were trained on the same data."),
    ] = False,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="FOREBEAR_API_KEY", help="Endpoint key.")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    samples: Annotated[
        int, typer.Option("--samples", help="Suspect's token: the mode of N samples (0: greedy).")
    ] = 0,
    distribution: Annotated[
        bool,
        typer.Option("--distribution", help="Also test each candidate's sampling distribution."),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Also write an evidence report here: .html, .md or .json."),
    ] = None,
) -> None:
    """Behavioural evidence (not weight evidence): is SUSPECT closer to a candidate than to
    every control (derivation or distillation), or the candidate itself (identity)?"""
    from forebear.behavior.distribution import DistributionPlan
    from forebear.behavior.probe import probe
    from forebear.report import probe_report, report_format, write_report

    try:
        if report is not None:
            report_format(report)  # a bad suffix fails now, not after the probe
        names = parse_models(candidates)
        if not names:
            raise ForebearError("no candidates", hint="give --candidates MODEL (one or more)")
        others = parse_models(controls)
        store = None if cache is None else ResponseCache(cache)
        extra = DistributionPlan().queries if distribution else 0  # the distribution test's
        asked = open_client(
            suspect, cache=store, api_key=api_key, budget=budget * max(1, samples) + extra
        )
        each = budget + extra
        clients = {
            ref: open_client(ref, cache=store, api_key=api_key, budget=each)
            for ref in [*names, *others]
        }
        result = probe(
            asked,
            {name: clients[name] for name in names},
            {name: clients[name] for name in others},
            budget=budget, batch=batch, alpha=alpha, seed=seed, top_k=top_k,
            same_data_controls=same_data, samples=samples, distribution=distribution,
            progress=None if quiet else _progress,
        )  # fmt: skip
        if report is not None:
            inputs = (suspect, *names, *others)
            made = probe_report(result, command=["forebear", *sys.argv[1:]], inputs=inputs)
            written = write_report(made, report)
            if not quiet:
                _progress(f"report written to {written}")
    except ForebearError as error:
        Output.error(str(error))
        raise typer.Exit(EXIT_ERROR) from None
    Output(fmt).emit(result.to_json(), render_probe)
    if result.verdict == "derived":
        raise typer.Exit(EXIT_DERIVED)
    raise typer.Exit(EXIT_INCONCLUSIVE if result.verdict == "inconclusive" else EXIT_NONE)


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def render_probe(console: Console, data: dict[str, Any]) -> None:
    console.print(f"[bold]{data['summary']}[/bold]")
    console.print(f"suspect: {data['suspect']}")
    console.print()
    table = Table(show_edge=False, title="candidates", title_justify="left")
    for column in ("candidate", "agreement (95% CI)", "derivation", "log10 p", "identity"):
        table.add_column(column)
    for c in data["candidates"]:
        a, d, i = c["agreement"], c["derivation"], c["identity"]
        table.add_row(
            c["name"],
            f"{a['rate']:.3f} ({a['ci'][0]:.3f}–{a['ci'][1]:.3f}) of {a['prompts']}",
            d["verdict"],
            _p(d["log10_p"]),
            f"{i['verdict']} ({i['disagreements']}/{i['prompts']} differ)",
        )
    console.print(table)
    for c in data["candidates"]:
        console.print()
        sub = Table(
            show_edge=False, title=f"{c['name']} against each control", title_justify="left"
        )
        for column in ("control", "only candidate", "only control", "log10 p (Holm)"):
            sub.add_column(column)
        for t in c["derivation"]["controls"]:
            sub.add_row(
                t["control"], str(t["candidate_only"]), str(t["control_only"]),
                _p(t["log10_p_holm"]),
            )  # fmt: skip
        console.print(sub)
        for test in c.get("distribution", []):
            console.print(
                f"identity as a distribution ({test['method']}): {test['verdict']}, "
                f"p = {test['p_value']:.3g} on {test['prompts']} prompts"
            )
    _render_footer(console, data)


def _render_footer(console: Console, data: dict[str, Any]) -> None:
    console.print()
    for a in data["controls"]:
        console.print(f"control {a['model']}: agreement {a['rate']:.3f} of {a['prompts']}")
    prompts = data["prompts"]
    console.print(
        f"prompts: {prompts['used']} asked ({data['stopped']}), set sha256 "
        f"{prompts['sha256'][:16]}…, seed {prompts['seed']}"
    )
    console.print("queries: " + ", ".join(f"{k} {v}" for k, v in data["queries"].items()))
    console.print()
    console.print("[dim]Which question each number answers:[/dim]")
    for name, text in data["questions"].items():
        console.print(f"[dim]  • {name}: {text}[/dim]")
    if not data["distillation_answered"]:
        console.print("[dim]  (distillation: not answered - the controls were not declared "
                      "same-data models; see --same-data-controls)[/dim]")  # fmt: skip
    console.print("[dim]What behaviour cannot show:[/dim]")
    for line in data["cannot_see"]:
        console.print(f"[dim]  • {line}[/dim]")
