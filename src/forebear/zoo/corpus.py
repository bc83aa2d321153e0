"""The zoo's training text, assembled offline from the Python standard library's sources.

Every machine that runs forebear has a Python standard library, so its ``.py``
files (code, comments and docstrings) are a corpus that needs no download. The
files are split into two disjoint corpora by a hash of their top-level module
name, so a whole package lands in one corpus: bases trained on ``corpus-a``
share their data, a base trained on ``corpus-b`` does not. Files are taken in
a hash order of their paths (so each corpus mixes many packages rather than
the alphabet's first few) until a byte budget is spent; the last file is cut
at a line boundary.

The text depends on the Python version that supplies it; ``Corpus.sha256`` is
recorded in the zoo's manifest so a built zoo says exactly what it read. This
module owns reading, splitting and caching the text; it tokenises nothing.
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from forebear.errors import InputNotFoundError

__all__ = [
    "CORPORA",
    "DEFAULT_BUDGET",
    "Corpus",
    "assemble_corpus",
    "corpus_of",
    "load_corpus",
    "stdlib_root",
]

CORPORA = ("corpus-a", "corpus-b")
DEFAULT_BUDGET = 2_000_000  # bytes of text per corpus: far more than the mini profile trains on
_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Corpus:
    name: str
    text: str
    files: tuple[str, ...]  # paths relative to the standard library, in reading order
    sha256: str  # of the text itself

    @property
    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_of(relative: str) -> str:
    """The corpus a standard-library file belongs to, decided by its top-level module name."""
    top = relative.split("/", 1)[0].removesuffix(".py")
    return CORPORA[hashlib.sha256(top.encode("utf-8")).digest()[0] % len(CORPORA)]


def _candidates(root: Path) -> list[str]:
    """Every ``.py`` file under ``root`` except third-party ones, in a seedless hash order."""
    found = [
        path.relative_to(root).as_posix()
        for path in root.rglob("*.py")
        if "site-packages" not in path.relative_to(root).parts
    ]
    return sorted(found, key=lambda rel: (hashlib.sha256(rel.encode("utf-8")).hexdigest(), rel))


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8").replace("\r\n", "\n")
    except (OSError, UnicodeDecodeError):
        return None  # unreadable or deliberately mis-encoded test files carry nothing we need


def _clipped(text: str, room: int) -> str:
    """``text`` cut after its last whole line within ``room`` bytes (all of it if it fits)."""
    data = text.encode("utf-8")
    if len(data) <= room:
        return text
    head = data[:room].decode("utf-8", errors="ignore")
    return head[: head.rfind("\n") + 1] or head


def assemble_corpus(name: str, *, budget: int = DEFAULT_BUDGET, root: Path | None = None) -> Corpus:
    """The text of ``name``: files of its half of the library, the last one cut at a line
    boundary so the text stays within ``budget`` bytes."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    base = root if root is not None else stdlib_root()
    if not base.is_dir():
        raise InputNotFoundError(
            "no Python standard library here to build a corpus from",
            path=base,
            hint="run forebear with a full Python installation",
        )
    parts: list[str] = []
    files: list[str] = []
    size = 0
    for relative in _candidates(base):
        if corpus_of(relative) != name:
            continue
        text = _read_text(base / relative)
        if not text or not text.strip():
            continue
        text = _clipped(text, budget - size)
        parts.append(text)
        files.append(relative)
        size += len(text.encode("utf-8")) + len(_SEPARATOR)
        if size >= budget:
            break
    joined = _SEPARATOR.join(parts)
    digest = hashlib.sha256(joined.encode("utf-8")).hexdigest()
    return Corpus(name=name, text=joined, files=tuple(files), sha256=digest)


def _cache_key(name: str, budget: int, root: Path) -> str:
    identity = {"name": name, "budget": budget, "root": str(root), "python": sys.version}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def load_corpus(
    name: str, *, cache: Path | None = None, budget: int = DEFAULT_BUDGET, root: Path | None = None
) -> Corpus:
    """``assemble_corpus``, kept under ``cache/corpora`` so the library is walked only once."""
    base = root if root is not None else stdlib_root()
    if cache is None:
        return assemble_corpus(name, budget=budget, root=base)
    folder = cache / "corpora"
    stem = f"{name}-{_cache_key(name, budget, base)}"
    text_path, files_path = folder / f"{stem}.txt", folder / f"{stem}.files.json"
    if text_path.is_file() and files_path.is_file():
        text = text_path.read_bytes().decode("utf-8")
        files = tuple(json.loads(files_path.read_text(encoding="utf-8")))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return Corpus(name=name, text=text, files=files, sha256=digest)
    corpus = assemble_corpus(name, budget=budget, root=base)
    folder.mkdir(parents=True, exist_ok=True)
    text_path.write_bytes(corpus.text.encode("utf-8"))
    files_path.write_text(json.dumps(list(corpus.files)), encoding="utf-8")
    return corpus
