"""Batch building: ref lists, the three engines, resuming, per-model failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from forebear.cli import main
from forebear.demo import build_demo_suspects
from forebear.index import Engine, Index, TaskSettings, build_index, executor
from forebear.index.batch import SerialExecutor, normalize_ref, read_ref_list, split_ref

SETTINGS = TaskSettings(dims=16, units=32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("batch")
    found: list[Path] = []
    for seed in (0, 1):
        found += build_demo_suspects(root / f"seed{seed}", seed=seed).values()
    return sorted(str(path) for path in found)


def _contents(path: Path) -> dict[str, tuple[Any, ...]]:
    """What a build must reproduce: per ref, the fingerprint's checksum, vector and shape."""
    with Index.open(path, create=False) as index:
        return {
            r.ref: (r.blob_sha256, r.vector.tobytes(), json.dumps(dict(r.structure)))
            for r in index.records()
        }


class Counting(SerialExecutor):
    """A serial executor that remembers what it was asked to run."""

    def __init__(self) -> None:
        self.submitted: list[object] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted.append(args[0])
        return super().submit(fn, *args, **kwargs)


def test_ref_lists_and_refs(tmp_path: Path) -> None:
    listing = tmp_path / "models.txt"
    listing.write_text(
        "# reference models\n\norg/a\norg/b@v1.0   # pinned\n\torg/c\t# tab comment\n"
        "  # indented comment\norg/a\nhttps://example.org/m.safetensors#frag\n"
    )
    assert read_ref_list(listing) == [
        "org/a",
        "org/b@v1.0",
        "org/c",
        "https://example.org/m.safetensors#frag",
    ]
    assert split_ref("org/b@v1.0") == ("org/b", "v1.0")
    assert split_ref("org/b@refs/pr/1") == ("org/b", "refs/pr/1")
    assert split_ref("org/b") == ("org/b", None) and split_ref("org/b@") == ("org/b@", None)
    url = "https://user@example.org/m.safetensors"
    assert split_ref(url) == (url, None)
    odd = tmp_path / "model@2024"  # an existing folder is never split
    odd.mkdir()
    assert split_ref(str(odd)) == (str(odd), None)
    assert normalize_ref(os.path.relpath(odd)) == str(odd.resolve())
    assert normalize_ref("org/never-a-local-path") == "org/never-a-local-path"


def test_the_engines_build_the_same_index(models: list[str], tmp_path: Path) -> None:
    with Index.open(tmp_path / "serial.sqlite") as index:
        report = build_index(index, models, SerialExecutor(), SETTINGS)
    assert report.count("added") == len(models) and not report.failed
    with (
        Index.open(tmp_path / "process.sqlite") as index,
        executor(Engine.process, workers=2) as pool,
    ):
        build_index(index, models, pool, SETTINGS)
    serial = _contents(tmp_path / "serial.sqlite")
    assert serial == _contents(tmp_path / "process.sqlite")
    assert sorted(serial) == sorted(str(Path(m).resolve()) for m in models)


def test_a_process_pool_runs_blas_on_one_thread() -> None:
    before = os.environ.get("OMP_NUM_THREADS")
    with executor(Engine.process, workers=1) as pool:
        names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        seen = [pool.submit(os.getenv, name).result() for name in names]
    assert seen == ["1", "1"]
    assert os.environ.get("OMP_NUM_THREADS") == before  # the parent's own setting is back


def test_a_dask_cluster_builds_the_same_index(models: list[str], tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    with Index.open(tmp_path / "serial.sqlite") as index:
        build_index(index, models[:3], SerialExecutor(), SETTINGS)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Index.open(tmp_path / "dask.sqlite") as index,
        executor(Engine.dask, scheduler=cluster.scheduler_address) as pool,
    ):
        report = build_index(index, models[:3], pool, SETTINGS)
    assert report.count("added") == 3
    assert _contents(tmp_path / "dask.sqlite") == _contents(tmp_path / "serial.sqlite")


def test_builds_skip_what_is_indexed_and_force_redoes_it(models: list[str], tmp_path: Path) -> None:
    with Index.open(tmp_path / "i.sqlite") as index:
        first = Counting()
        build_index(index, models[:2], first, SETTINGS)
        rest = Counting()
        report = build_index(index, models, rest, SETTINGS)
        assert rest.submitted == models[2:] and report.count("skipped") == 2
        again = Counting()
        assert build_index(index, models, again, SETTINGS).count("skipped") == len(models)
        assert again.submitted == []
        forced = Counting()
        report = build_index(index, models, forced, SETTINGS, force=True)
        assert forced.submitted == models and report.count("added") == len(models)
        assert len(index) == len(models)  # replaced, not duplicated


def test_a_killed_build_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models: list[str] = []
    for seed in range(16):  # enough models that the kill lands mid-build
        models += map(str, build_demo_suspects(tmp_path / f"seed{seed}", seed=seed).values())
    listing = tmp_path / "models.txt"
    listing.write_text("\n".join(models) + "\n")
    path = tmp_path / "i.sqlite"
    Index.open(path).close()
    command = [
        sys.executable,
        "-m",
        "forebear",
        "index",
        "build",
        str(listing),
        "--index",
        str(path),
        "--engine",
        "serial",
        "--dims",
        "16",
        "--units",
        "32",
        "-q",
    ]
    build = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    with Index.open(path) as index:
        while len(index) < 2 and build.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    os.kill(build.pid, signal.SIGKILL)
    build.wait()
    with Index.open(path) as index:
        written = len(index)
    assert 2 <= written < len(models)
    code = main(
        [
            "index",
            "build",
            str(listing),
            "--index",
            str(path),
            "--engine",
            "serial",
            "--dims",
            "16",
            "--units",
            "32",
            "-q",
            "--format",
            "json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["records"] == len(models)
    assert result["skipped"] == written and result["added"] == len(models) - written


def test_each_failure_is_one_line_and_the_others_are_added(
    models: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    listing = tmp_path / "models.txt"
    listing.write_text(f"{models[0]}\n{empty}\n{models[1]}\n")
    code = main(
        [
            "index",
            "build",
            str(listing),
            "--index",
            str(tmp_path / "i.sqlite"),
            "--engine",
            "serial",
            "--dims",
            "16",
            "--units",
            "32",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("forebear: error: ")]
    assert len(errors) == 1 and str(empty) in errors[0]
    assert "indexing" in err  # the progress bar, on stderr
    assert "2 added, 0 already indexed, 1 failed" in " ".join(out.split())


def test_missing_dask_or_scheduler_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    listing = tmp_path / "models.txt"
    listing.write_text("org/model\n")
    argv = [
        "index",
        "build",
        str(listing),
        "--index",
        str(tmp_path / "i.sqlite"),
        "--engine",
        "dask",
        "-q",
    ]
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        "forebear: error: the dask engine needs a scheduler address — pass --scheduler "
        "tcp://HOST:8786 (start one with `dask scheduler`)\n"
    )
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were missing
    assert main([*argv, "--scheduler", "tcp://127.0.0.1:1"]) == 1
    assert capsys.readouterr().err == (
        "forebear: error: the dask engine needs Dask distributed — pip install 'forebear[dask]'\n"
    )
