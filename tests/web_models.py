"""Tiny models and an index for the web app's tests, built from numpy (``forebear.demo``):
a llama, a fine-tune stand-in, a disguised copy and an independent llama, all hidden 64 ≠
intermediate 96. Nothing is trained or downloaded; about three seconds in all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from forebear.demo import REFERENCE, build_demo_models, build_demo_suspects
from forebear.index import Index, make_record

NAMES = (REFERENCE, "suspect-finetuned", "suspect-disguised", "suspect-independent")
UNITS = 96  # every MLP unit of the demo llama


@dataclass(frozen=True)
class WebModels:
    root: Path  # the folder the app may read
    index: Path  # an index of the four models

    def path(self, name: str) -> Path:
        return self.root / name


def build_web_models(folder: Path) -> WebModels:
    root = folder / "models"
    root.mkdir(parents=True)
    root = root.resolve()  # the app resolves paths; the index should name them the same way
    build_demo_models(root)
    build_demo_suspects(root)
    index = folder / "index.sqlite"
    with Index.open(index) as opened:
        for name in NAMES:
            opened.add(make_record(str(root / name), units=UNITS))
    return WebModels(root=root, index=index)
