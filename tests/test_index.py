"""The reference index: records, migrations, retrieval, the vector cache, the CLI, crashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from forebear.cli import main
from forebear.demo import build_demo_suspects
from forebear.errors import CorruptCheckpointError, InputNotFoundError, UnsupportedFormatError
from forebear.fingerprint.vector import VECTOR_DIMS
from forebear.index import Index, IndexRecord, Search, make_record, parse_card
from forebear.index.schema import MIGRATIONS, SCHEMA_VERSION, migrate
from forebear.index.synthetic import synthetic_records

DIMS, UNITS = 16, 32  # small sketches: these tests check storage, not statistics
FINETUNE_CARD = "---\nbase_model: demo/llama\nlicense: mit\n---\n# Tuned\nA fine-tune.\n"
SCRATCH_CARD = (
    "---\nlicense: apache-2.0\ntags: [llama]\n---\n# Indie\n"
    "We did not copy anything.\nThis model was trained\nfrom scratch on 1T tokens. Enjoy!\n"
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths = build_demo_suspects(tmp_path_factory.mktemp("models"))
    (paths["suspect-finetuned"] / "README.md").write_text(FINETUNE_CARD)
    (paths["suspect-independent"] / "README.md").write_text(SCRATCH_CARD)
    return paths


@pytest.fixture(scope="module")
def made(models: dict[str, Path]) -> dict[str, IndexRecord]:
    return {name: make_record(str(p), dims=DIMS, units=UNITS) for name, p in models.items()}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_records_round_trip_with_their_fingerprints(
    made: dict[str, IndexRecord], tmp_path: Path
) -> None:
    record = made["suspect-finetuned"]
    with Index.open(tmp_path / "i.sqlite") as index:
        assert index.add(record) is True
        assert index.add(record) is False  # the key is present: nothing written
        assert index.add(record, replace=True) is True and len(index) == 1
        stored = index.get(record.ref)
        assert stored is not None and stored.blob is None  # listings never load blobs
        assert stored == record.without_blob()  # every compared field survives
        np.testing.assert_array_equal(stored.vector, record.vector)
        found = index.load_fingerprint(stored)
    assert stored.card.base_models == ("demo/llama",) and stored.card.license == "mit"
    assert stored.structure["hidden"] == 64 and stored.family == "llama"
    assert found.meta["structure"] == dict(record.structure)
    assert hashlib.sha256(record.blob or b"").hexdigest() == stored.blob_sha256


def test_model_cards_claims() -> None:
    scratch = parse_card(SCRATCH_CARD)
    assert scratch.license == "apache-2.0" and scratch.base_models == ()
    assert scratch.evidence == "This model was trained from scratch on 1T tokens."
    assert parse_card("---\nbase_model: [a/b, 7, c/d]\n---\ntrained from scratch").base_models == (
        "a/b",
        "c/d",
    )
    # A declared base outweighs the phrase; a negated phrase is no claim.
    assert not parse_card("---\nbase_model: a/b\n---\nWe trained from scratch.").from_scratch
    assert not parse_card("It was not trained from scratch.").from_scratch
    assert parse_card("Our model is not based on any other model.").from_scratch
    hostile = [
        "---\n!!python/object/apply:os.system [echo hi]\n---\n",  # safe_load refuses tags
        "---\n- just\n- a list\n---\n",
        "---\na: &a [x, x]\nb: [*a, *a, *a]\nbase_model: {not: a string}\n---\n",
        "---\nbase_model: " + "x" * 5000 + "\n---\n",
        "---\nunterminated: [\n---\n",
    ]
    for text in hostile:
        claims = parse_card(text)
        assert claims.base_models == () and claims.license is None
    huge = "---\nlicense: mit\n---\n" + "words " * 400_000 + "trained from scratch"
    assert parse_card(huge).license == "mit" and not parse_card(huge).from_scratch  # past 1 MB


def test_an_old_index_is_migrated(made: dict[str, IndexRecord], tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with Index.open(tmp_path / "new.sqlite") as new:
        new.add(made["suspect-finetuned"])
    raw = sqlite3.connect(path, isolation_level=None)
    migrate(raw, path, target=1)  # a file as the first schema left it
    source = sqlite3.connect(tmp_path / "new.sqlite")
    columns = [row[1] for row in source.execute("PRAGMA table_info(records)")][1:]
    rows = source.execute(f"SELECT {', '.join(columns)} FROM records").fetchall()
    marks = ", ".join("?" * len(columns))
    raw.executemany(f"INSERT INTO records ({', '.join(columns)}) VALUES ({marks})", rows)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
    raw.close()
    with Index.open(path) as index:
        record = index.get(made["suspect-finetuned"].ref)
        assert record is not None and index.load_fingerprint(record).tokens
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    names = {row[0] for row in check.execute("SELECT name FROM sqlite_master")}
    assert "records_family" in names  # what migration 2 adds


def test_files_that_are_not_this_forebears_index_get_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newer = tmp_path / "newer.sqlite"
    Index.open(newer).close()
    raw = sqlite3.connect(newer)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database, just notes\n" * 100)
    foreign = tmp_path / "other.sqlite"
    raw = sqlite3.connect(foreign)
    raw.execute("CREATE TABLE songs (title TEXT)")
    raw.close()
    way_out = "pass another --index (or FOREBEAR_INDEX), or move this file away"
    expected = {
        newer: f"{newer}: index schema {SCHEMA_VERSION + 1} was written by a newer forebear "
        f"(this one reads up to {SCHEMA_VERSION}) — upgrade forebear (pip install -U forebear), "
        "or pass another --index",
        text: f"{text}: not a forebear index (SQLite says: file is not a database) — {way_out}",
        foreign: f"{foreign}: is a SQLite database but not a forebear index — {way_out}",
    }
    for path, line in expected.items():
        with pytest.raises(UnsupportedFormatError):
            Index.open(path)
        code, out, err = run(["index", "ls", "--index", str(path)], capsys)
        assert (code, out, err) == (4, "", f"forebear: error: {line}\n")
    missing = tmp_path / "absent.sqlite"
    with pytest.raises(InputNotFoundError):
        Index.open(missing, create=False)
    assert not missing.exists()


def test_a_damaged_blob_names_the_record_and_the_way_out(
    made: dict[str, IndexRecord], tmp_path: Path
) -> None:
    path = tmp_path / "i.sqlite"
    record = made["suspect-disguised"]
    with Index.open(path) as index:
        index.add(record)
    raw = sqlite3.connect(path)
    blob = bytearray(raw.execute("SELECT blob FROM records").fetchone()[0])
    blob[len(blob) // 2] ^= 0x01  # one flipped bit, as a bad disk would leave it
    raw.execute("UPDATE records SET blob = ?", (bytes(blob),))
    raw.commit()
    raw.close()
    with Index.open(path) as index, pytest.raises(CorruptCheckpointError) as caught:
        stored = index.get(record.ref)
        assert stored is not None
        index.load_fingerprint(stored)
    assert str(caught.value) == (
        f"{path}: record {record.ref!r}: its fingerprint blob fails its SHA-256 (damaged) — "
        f"re-add it with `forebear index add {record.ref} --force`"
    )


def _planted(count: int, seed: int) -> tuple[list[IndexRecord], np.ndarray]:
    """Synthetic records in 30 clusters, plus a query that is a near-duplicate of record 123."""
    records = list(synthetic_records(count, np.random.default_rng(seed), families=30))
    return records, _near(records[123].vector, seed + 1)


def _near(vector: np.ndarray, seed: int) -> np.ndarray:
    moved = vector + np.random.default_rng(seed).standard_normal(VECTOR_DIMS) * 0.02
    return (moved / np.linalg.norm(moved)).astype(np.float32)


def test_exact_and_approximate_search_agree(tmp_path: Path) -> None:
    records, query = _planted(3000, 0)
    with Index.open(tmp_path / "i.sqlite") as index:
        assert index.add_many(records) == 3000
        exact = index.candidates(query, k=10, search=Search.exact)
        graph = index.candidates(query, k=10, search=Search.ann)
        assert list(tmp_path.glob("i.sqlite.vectors/ann-*.usearch"))  # the graph was used
        for seed in range(20):  # queries among the clusters, as real ones are
            vector = _near(records[seed * 149].vector, seed)
            top_exact = index.candidates(vector, k=10, search=Search.exact)
            top_graph = index.candidates(vector, k=10, search=Search.ann)
            assert [c.record.ref for c in top_graph] == [c.record.ref for c in top_exact]
        late = list(synthetic_records(50, np.random.default_rng(9), start=3000, families=30))
        index.add_many(late)  # past the graph: searched exactly until the graph is extended
        found = index.candidates(_near(late[7].vector, 9), k=1, search=Search.ann)
        assert found[0].record.ref == late[7].ref
        manifest = json.loads((tmp_path / "i.sqlite.vectors/manifest.json").read_text())
        assert (manifest["rows"], manifest["ann_rows"]) == (3050, 3000)
        index.warm(Search.ann, tail=0)
        manifest = json.loads((tmp_path / "i.sqlite.vectors/manifest.json").read_text())
        assert manifest["ann_rows"] == 3050
    assert exact[0].record.ref == graph[0].record.ref == records[123].ref
    assert exact[0].score > 0.9 and exact[1].score < exact[0].score - 0.1
    assert [c.score for c in exact] == pytest.approx([c.score for c in graph], abs=1e-6)
    assert exact[0].record.blob is None  # a scan loads blobs only for what it tests


def test_the_structural_filter(tmp_path: Path) -> None:
    records, query = _planted(500, 1)
    small = {**records[123].structure, "hidden": 1024}  # narrower than every other record
    records[123] = planted = dataclasses.replace(records[123], structure=small)
    with Index.open(tmp_path / "i.sqlite") as index:
        index.add_many(records)
        for search in (Search.exact, Search.ann):
            assert index.candidates(query, k=1, min_hidden=1024, search=search)[0].record == planted
            kept = index.candidates(query, k=50, min_hidden=4096, search=search)
            assert len(kept) == 50 and all((c.record.hidden or 0) >= 4096 for c in kept)
            assert planted not in {c.record for c in kept}
            without = index.candidates(query, k=5, exclude=[planted.ref], search=search)
            assert planted.ref not in {c.record.ref for c in without} and len(without) == 5


def test_the_vector_cache_follows_every_write(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    records, query = _planted(400, 2)
    planted = records[123]
    with Index.open(path) as index:
        index.add_many(records[:100])
        assert index.candidates(query, k=1)[0].record.ref != planted.ref
        index.add_many(records[100:])  # appended to the cache, not rebuilt
        epoch = json.loads((tmp_path / "i.sqlite.vectors/manifest.json").read_text())["epoch"]
        assert index.candidates(query, k=1)[0].record.ref == planted.ref
        index.remove(planted.ref)  # a tombstone
        assert planted.ref not in {c.record.ref for c in index.candidates(query, k=20)}
        manifest = json.loads((tmp_path / "i.sqlite.vectors/manifest.json").read_text())
        assert manifest["epoch"] == epoch
        index.add(planted)  # a new id for the same key
        assert index.candidates(query, k=1)[0].record.ref == planted.ref
        for record in records[:150]:  # past the tombstone budget: rebuilt
            index.remove(record.ref)
        assert len(index.candidates(query, k=1000)) == len(index) == 250
        (tmp_path / "i.sqlite.vectors/manifest.json").write_text("{broken")
        assert len(index.candidates(query, k=1000)) == 250  # a damaged cache is rebuilt
        expected = sorted(r.ref for r in records[150:])
    with Index.open(path) as index:
        assert sorted(c.record.ref for c in index.candidates(query, k=1000)) == expected


def test_the_cli_adds_lists_shows_removes_exports_imports(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "i.sqlite")
    folders = [str(models[name]) for name in sorted(models)]
    common = ["--index", path, "--dims", str(DIMS), "--units", str(UNITS)]
    code, out, err = run(["index", "add", *folders, *common, "--format", "json"], capsys)
    assert code == 0, err
    assert json.loads(out)["added"] == 3 and json.loads(out)["records"] == 3
    code, out, _ = run(["index", "add", folders[0], *common, "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["added"] == 0 and json.loads(out)["skipped"] == 1
    code, out, _ = run(["index", "ls", "--index", path, "--format", "json"], capsys)
    listed = json.loads(out)["records"]
    assert [r["ref"] for r in listed] == [str(Path(f).resolve()) for f in folders]
    code, out, _ = run(["index", "show", folders[2], "--index", path], capsys)
    text = " ".join(out.split())  # rich wraps long lines
    assert code == 0 and "card claims: from scratch" in text
    assert "“This model was trained from scratch on 1T tokens.”" in text
    code, out, _ = run(["index", "show", folders[1], "--index", path, "--format", "json"], capsys)
    assert json.loads(out)["card"]["base_models"] == ["demo/llama"]
    export = tmp_path / "all.jsonl"
    assert run(["index", "export", str(export), "--index", path], capsys)[0] == 0
    code, out, err = run(["index", "rm", folders[1], "--index", path], capsys)
    assert code == 0 and "1 record(s) removed" in out
    code, out, err = run(["index", "rm", folders[1], "--index", path], capsys)
    assert code == 3 and err == (
        f"forebear: error: {path}: {folders[1]} is not in the index — "
        "list what is with `forebear index ls`\n"
    )
    for added in (1, 0):  # importing twice adds nothing the second time
        code, out, err = run(
            ["index", "import", str(export), "--index", path, "-f", "json"], capsys
        )
        assert code == 0, err
        assert (json.loads(out)["added"], json.loads(out)["present"]) == (added, 3 - added)
    with Index.open(path) as index:
        assert len(index) == 3
        for record in index.records():
            assert index.load_fingerprint(record).meta["structure"] == dict(record.structure)


def test_import_checks_the_whole_file_first(
    made: dict[str, IndexRecord], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Index.open(tmp_path / "source.sqlite") as source:
        source.add_many(made.values())
        source.export(tmp_path / "good.jsonl")
    lines = (tmp_path / "good.jsonl").read_text().splitlines()
    line = json.loads(lines[2])
    wrong_vector = dict(line, vector=json.loads(lines[1])["vector"])  # another model's
    cases = {
        "truncated": (lines[:-1], "ends without its trailer (truncated)"),
        "checksum": (
            [lines[0], lines[1], json.dumps(dict(line, blob_sha256="0" * 64)), *lines[3:]],
            f"line 3: record {line['ref']!r} has a fingerprint blob that fails its SHA-256",
        ),
        "vector": (
            [lines[0], lines[1], json.dumps(wrong_vector), *lines[3:]],
            "line 3: the vector disagrees with the fingerprint's",
        ),
        "not-export": (['{"hello": 1}'], "is not a forebear index export"),
    }
    hint = "the export is damaged or not a forebear index export; export it again"
    for name, (content, why) in cases.items():
        bad = tmp_path / f"{name}.jsonl"
        bad.write_text("\n".join(content) + "\n")
        target = tmp_path / f"{name}.sqlite"
        code, _, err = run(["index", "import", str(bad), "--index", str(target)], capsys)
        assert (code, err) == (5, f"forebear: error: {bad}: {why} — {hint}\n"), name
        with Index.open(target) as index:
            assert len(index) == 0, name  # nothing added from a file that fails a check


def test_add_many_is_bulk_and_idempotent(tmp_path: Path) -> None:
    records = list(synthetic_records(12_000, np.random.default_rng(3)))
    with Index.open(tmp_path / "i.sqlite") as index:
        start = index.generation()
        assert index.add_many(records) == 12_000
        assert index.generation() == start + 3  # one write per chunk of 5000
        assert index.add_many(records[::7]) == 0
        assert len(index) == 12_000 and len(list(index.records(family="synthetic"))) == 12_000


_KILLED_WRITER = """
import dataclasses, pickle, sys
from forebear.index import Index
record = pickle.loads(open(sys.argv[2], "rb").read())
copies = (dataclasses.replace(record, ref=f"copy/{i:06d}") for i in range(1_000_000))
with Index.open(sys.argv[1]) as index:
    index.add_many(copies, chunk=50)
"""

_WRITER = """
import dataclasses, sys, numpy as np
from forebear.index import Index
from forebear.index.synthetic import synthetic_records
name, count = sys.argv[2], int(sys.argv[3])
records = list(synthetic_records(count, np.random.default_rng(0)))
with Index.open(sys.argv[1]) as index:
    for i, record in enumerate(records):
        ref = record.ref if i < count // 4 else f"{name}/{i}"  # a quarter shared by both
        index.add(dataclasses.replace(record, ref=ref))
        if i % 50 == 0:
            index.candidates(record.vector, k=3)  # the cache refreshes under writes
"""


def _python(script: str, *args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_a_writer_killed_mid_write_leaves_no_partial_record(
    made: dict[str, IndexRecord], tmp_path: Path
) -> None:
    path = tmp_path / "i.sqlite"
    pickled = tmp_path / "record.pickle"
    pickled.write_bytes(pickle.dumps(made["suspect-finetuned"]))
    Index.open(path).close()
    writer = _python(_KILLED_WRITER, path, pickled)
    deadline = time.monotonic() + 60
    with Index.open(path) as index:
        while len(index) < 150 and time.monotonic() < deadline and writer.poll() is None:
            time.sleep(0.05)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Index.open(path) as index:
        count = len(index)
        assert count >= 150 and count % 50 == 0  # whole transactions only
        for record in index.records():
            index.load_fingerprint(record)  # every blob passes its checksum and parses
        assert index.add(dataclasses.replace(made["suspect-finetuned"], ref="after/crash"))
        assert len(index.candidates(made["suspect-finetuned"].vector, k=5)) == 5


def test_two_writer_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"  # created by whichever writer comes first
    writers = [_python(_WRITER, path, name, 200) for name in ("a", "b")]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err.decode()
    with Index.open(path) as index:
        refs = {record.ref for record in index.records()}
        assert len(index) == len(refs) == 50 + 2 * 150
        assert {f"a/{i}" for i in range(50, 200)} <= refs
        assert sorted(
            c.record.ref for c in index.candidates(np.ones(VECTOR_DIMS) / 16, k=1000)
        ) == sorted(refs)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
