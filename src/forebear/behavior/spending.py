"""What a query costs: the cache in front of a model, the count and the budget behind it.

Both clients answer a batch the same way (``answer_through_cache``): the answers the
cache holds are taken from it (free, marked cached); the budget is checked for the
rest *before* anything is sent, so an exhausted budget never leaves a batch half
asked; the rest go to the model in chunks, and each chunk's answers are counted and
stored as soon as they arrive, so a failure later in the batch loses nothing paid for.
This module owns that flow and the counter; the model calls are the clients'.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from forebear.behavior.base import BudgetExhaustedError, TokenAnswer
from forebear.behavior.cache import ResponseCache

__all__ = ["QueryMeter", "answer_through_cache", "token_answer"]


class QueryMeter:
    """Prompts a model answered (cache hits excluded) and the budget they may not exceed."""

    def __init__(self, name: str, budget: int | None) -> None:
        if budget is not None and budget < 0:
            raise ValueError(f"a query budget cannot be negative (got {budget})")
        self.name = name
        self.budget = budget
        self._spent = 0
        self._lock = threading.Lock()

    @property
    def queries(self) -> int:
        with self._lock:
            return self._spent

    def check(self, count: int) -> None:
        """Raise ``BudgetExhaustedError`` when ``count`` more queries would pass the budget."""
        with self._lock:
            if self.budget is None or self._spent + count <= self.budget:
                return
            spent = self._spent
        raise BudgetExhaustedError(
            f"{count} more queries would pass the budget of {self.budget} ({spent} spent); "
            "nothing was sent",
            path=self.name,
            hint="raise the budget, or re-run with the same cache so answered prompts cost nothing",
        )

    def spend(self, count: int) -> None:
        with self._lock:
            self._spent += count


def answer_through_cache(
    keys: Sequence[str | None],
    *,
    cache: ResponseCache | None,
    meter: QueryMeter,
    run: Callable[[list[int]], list[Any]],
    chunk: int,
) -> list[tuple[Any, bool]]:
    """(JSON answer, cached?) per key, in order.

    ``keys[i]`` is None for a query that must not be cached (a sampled answer without
    a seed). ``run(indices)`` asks the model for those positions and returns their
    answers as JSON values, in order; it is called with at most ``chunk`` positions.
    """
    held = cache.get_many([key for key in keys if key is not None]) if cache else {}
    answers: list[tuple[Any, bool] | None] = [
        (held[key], True) if key is not None and key in held else None for key in keys
    ]
    missing = [index for index, answer in enumerate(answers) if answer is None]
    meter.check(len(missing))
    for start in range(0, len(missing), max(1, chunk)):
        part = missing[start : start + max(1, chunk)]
        fresh = run(part)
        meter.spend(len(part))
        stored = []
        for index, value in zip(part, fresh, strict=True):
            answers[index] = (value, False)
            key = keys[index]
            if key is not None:
                stored.append((key, value))
        if cache is not None and stored:
            cache.put_many(stored)
    return [answer for answer in answers if answer is not None]


def token_answer(value: Mapping[str, Any], cached: bool) -> TokenAnswer:
    """A ``TokenAnswer`` from its JSON form ``{"token": str, "logprobs": {str: float} | null}``."""
    logprobs = value.get("logprobs")
    return TokenAnswer(
        token=str(value["token"]),
        logprobs=None if logprobs is None else {str(k): float(v) for k, v in logprobs.items()},
        cached=cached,
    )
