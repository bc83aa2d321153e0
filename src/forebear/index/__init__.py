"""The reference index: known models' fingerprints, and retrieval of the candidates to test.

``Index`` (``store``) keeps records in one SQLite file (``schema``) with a
vector cache beside it (``vectors``, ``ann``) that ``candidates`` searches
(``search``); ``card`` reads what model cards claim; ``batch`` makes records
from models on a process pool or a Dask cluster; ``transfer`` moves records
between indexes. See docs/index.md.
"""

from forebear.index.batch import (
    BuildOutcome,
    BuildReport,
    Engine,
    TaskSettings,
    build_index,
    executor,
    fingerprint_task,
    make_record,
)
from forebear.index.card import CardClaims, parse_card, read_card
from forebear.index.record import Candidate, IndexRecord, record_from_fingerprint
from forebear.index.schema import SCHEMA_VERSION
from forebear.index.search import EXACT_LIMIT, Search
from forebear.index.store import Index
from forebear.index.transfer import Imported, export_index, import_index

__all__ = [
    "EXACT_LIMIT",
    "SCHEMA_VERSION",
    "BuildOutcome",
    "BuildReport",
    "Candidate",
    "CardClaims",
    "Engine",
    "Imported",
    "Index",
    "IndexRecord",
    "Search",
    "TaskSettings",
    "build_index",
    "executor",
    "export_index",
    "fingerprint_task",
    "import_index",
    "make_record",
    "parse_card",
    "read_card",
    "record_from_fingerprint",
]
