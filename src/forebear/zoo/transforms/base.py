"""What every transformation returns, and the registry the zoo builder looks them up in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["REGISTRY", "Derived", "State", "copy_state", "register"]

State = dict[str, npt.NDArray[Any]]  # HF tensor name -> array, HF orientation


@dataclass(frozen=True)
class Derived:
    """A derived model: new weights and config, and the ground truth of how they were made.

    ``maps`` holds what a provenance method would have to recover (permutations,
    kept units, layer maps, token maps), JSON-serialisable. ``tokenizer_json``
    is set when the transformation changed the vocabulary.
    """

    state: State
    config: dict[str, Any]
    transformation: str
    params: dict[str, Any] = field(default_factory=dict)
    function_preserving: bool = False
    maps: dict[str, Any] = field(default_factory=dict)
    tokenizer_json: bytes | None = None


REGISTRY: dict[str, Callable[..., Derived]] = {}


def register(name: str) -> Callable[[Callable[..., Derived]], Callable[..., Derived]]:
    """Record a transformation under the name manifests use for it."""

    def add(function: Callable[..., Derived]) -> Callable[..., Derived]:
        if name in REGISTRY:
            raise ValueError(f"transformation {name!r} registered twice")
        REGISTRY[name] = function
        return function

    return add


def copy_state(state: State) -> State:
    """A deep copy, so a transformation never aliases its input's arrays."""
    return {name: np.array(array, copy=True) for name, array in state.items()}
