"""What every behaviour client offers, and the errors a query can end in.

A ``Client`` answers two kinds of query on a batch of text prompts:

- ``next_token``: the model's greedy (most likely) next token after each prompt, as
  the token's *string* (so models with different tokenizers compare), with the top
  ``top_k`` alternatives' natural-log probabilities when the model or endpoint gives
  them (``None`` otherwise: chat APIs often do not);
- ``generate``: sampled continuations (``temperature``, ``max_tokens``, ``seed``).

Every answered prompt counts one query (``queries``); a client with a budget raises
``BudgetExhaustedError`` before it would spend more. Clients never print.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from forebear.errors import ForebearError, RemoteError

__all__ = ["BudgetExhaustedError", "Client", "EndpointError", "TokenAnswer"]


@dataclass(frozen=True)
class TokenAnswer:
    """The greedy next token after one prompt."""

    token: str  # its text as the model's tokenizer decodes it ("" for end of text)
    logprobs: Mapping[str, float] | None = None  # top alternatives: token text -> ln p
    cached: bool = False  # served from the response cache (no query spent)


@runtime_checkable
class Client(Protocol):
    """A model to probe: local (``behavior.local``) or over HTTP (``behavior.http``)."""

    @property
    def name(self) -> str:
        """How reports name it: a path, or ``endpoint#model``."""
        ...

    @property
    def queries(self) -> int:
        """Prompts answered so far by the model itself (cache hits excluded)."""
        ...

    def next_token(self, prompts: Sequence[str], *, top_k: int = 0) -> list[TokenAnswer]:
        """One answer per prompt, in order."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int = 16,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        """One sampled continuation per prompt, in order (the continuation only)."""
        ...


class BudgetExhaustedError(ForebearError, RuntimeError):
    """The query budget would be exceeded: nothing more was sent."""


class EndpointError(RemoteError):
    """An endpoint failed for good (after its retries): unreachable, refused, or it
    answered in a shape that cannot be read (malformed JSON is never guessed at)."""
