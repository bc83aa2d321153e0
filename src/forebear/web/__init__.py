"""The web app of ``forebear serve``: jobs, reports, the index and its lineage atlas in a
browser, and a JSON API that mirrors the CLI. Presentation only: every result comes
from the library (``compare``, ``scan``, ``index``, ``lineage``, ``report``).

Needs the ``web`` extra (FastAPI, uvicorn); importing ``forebear.web.app`` without
it fails, which is why ``forebear serve`` imports it lazily.
"""

from forebear.web.settings import WebSettings

__all__ = ["WebSettings"]
