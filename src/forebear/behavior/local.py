"""A local model as a behaviour client: a Hugging Face folder run with transformers on CPU.

``LocalModel`` loads a folder as the zoo writes it (``config.json``,
``model.safetensors``, ``tokenizer.json``) once — float32, inference mode, no
gradients — and completes prompts: greedy at temperature 0, otherwise sampled with
a ``torch.Generator`` seeded from the call's seed *and the prompt*, so a prompt's
answer does not depend on the batch it came in (the loopback server, which answers
one request at a time, gives exactly what a batched local run gives). Prompts are
run in buckets of equal token length, so no padding touches the arithmetic; a prompt
longer than the model's context keeps its last tokens.

``LocalClient`` puts the query count, the budget and the response cache in front of
one, and can present it behind a system prompt (text prepended to every prompt) or
a forced sampling temperature — what an API serving the same weights may do.

torch and transformers (the ``torch`` extra) are imported when a model is loaded.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forebear.behavior.base import TokenAnswer
from forebear.behavior.cache import ResponseCache, cache_key
from forebear.behavior.spending import QueryMeter, answer_through_cache, token_answer
from forebear.errors import InputNotFoundError
from forebear.zoo.families import quiet_transformers
from forebear.zoo.folders import CONFIG, TOKENIZER, WEIGHTS

__all__ = ["Completion", "LocalClient", "LocalModel", "compose_prompt", "logprob_map"]

TopLogprobs = tuple[tuple[str, float], ...]  # (token text, ln p), most likely first


@dataclass(frozen=True)
class Completion:
    """What one prompt produced: the text and, per generated token, its log-probabilities."""

    text: str  # the continuation, end-of-text excluded
    tokens: tuple[str, ...]  # each generated token's text ("" for end of text)
    token_logprobs: tuple[float, ...]  # ln p of each generated token
    top_logprobs: tuple[TopLogprobs, ...]  # per position, the top-k alternatives (k may be 0)
    finish_reason: str  # "stop" (end of text) or "length"
    prompt_tokens: int


def compose_prompt(system_prompt: str | None, prompt: str) -> str:
    """The text a model sees: the system prompt, when there is one, prepended as is."""
    return prompt if not system_prompt else system_prompt + prompt


def logprob_map(top: TopLogprobs) -> dict[str, float]:
    """Token text -> ln p; where two ids decode to one text the likelier one stands."""
    found: dict[str, float] = {}
    for token, logprob in top:
        found.setdefault(token, logprob)
    return found


def _row_seed(seed: int | None, prompt: str) -> int:
    if seed is None:
        return secrets.randbits(63)
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _files_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for name in (CONFIG, WEIGHTS, TOKENIZER):
        with (path / name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class LocalModel:
    """One model folder, loaded once, answering prompts (no cache, no budget)."""

    def __init__(
        self, path: str | os.PathLike[str], *, device: str = "cpu", batch_size: int = 32
    ) -> None:
        self.path = Path(path).resolve()
        for name in (CONFIG, WEIGHTS, TOKENIZER):
            if not (self.path / name).is_file():
                raise InputNotFoundError(
                    f"model folder has no {name}",
                    path=self.path,
                    hint="give a folder holding config.json, model.safetensors and tokenizer.json",
                )
        self.device = device
        self.batch_size = max(1, batch_size)
        self.sha256 = _files_digest(self.path)
        self._model, self._tokenizer = self._load()
        config = self._model.config
        self.context: int = int(getattr(config, "max_position_embeddings", 0) or 1 << 30)
        self.eos_ids = frozenset(_ids(getattr(config, "eos_token_id", None)))
        self.bos_id: int | None = getattr(config, "bos_token_id", None)

    def _load(self) -> tuple[Any, Any]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModelForCausalLM

        with quiet_transformers():
            model: Any = AutoModelForCausalLM.from_pretrained(
                self.path, dtype=torch.float32, attn_implementation="eager", local_files_only=True
            )
        model.to(self.device)
        model.train(False)
        return model, Tokenizer.from_file(str(self.path / TOKENIZER))

    @property
    def identity(self) -> dict[str, str]:
        """What decides its answers, for cache keys: the folder and its files' sha256."""
        return {"local": str(self.path), "sha256": self.sha256}

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        if not ids and self.bos_id is None:
            raise ValueError("an empty prompt, and the model has no bos_token_id to start from")
        return ids or [self.bos_id]  # type: ignore[list-item]

    def token_text(self, token: int) -> str:
        """One token's text as its tokenizer decodes it alone; "" for end of text."""
        return "" if token in self.eos_ids else self.decode([token])

    def decode(self, tokens: Sequence[int]) -> str:
        text: str = self._tokenizer.decode(list(tokens), skip_special_tokens=False)
        return text

    def logits(self, rows: Sequence[Sequence[int]]) -> Any:
        """float32 logits (CPU tensor, batch × length × vocab) of equal-length rows of ids."""
        import torch

        batch = torch.tensor([list(row[-self.context :]) for row in rows], dtype=torch.long)
        with torch.inference_mode():
            logits = self._model(batch.to(self.device), use_cache=False).logits
        return logits.float().cpu()

    def last_logits(self, rows: Sequence[Sequence[int]]) -> Any:
        """float32 logits (CPU tensor, batch × vocab) after each equal-length row of ids."""
        return self.logits(rows)[:, -1, :]

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], *, temperature: float = 1.0
    ) -> list[float]:
        """Σ ln p of each continuation's tokens after its prompt, under softmax(z / T).
        The continuation is tokenised on its own, as text (so any model's text can be
        scored); past the context only its last tokens count."""
        import torch

        if temperature <= 0:
            raise ValueError(f"scoring needs a positive temperature (got {temperature})")
        rows, tails = [], []
        for prompt, text in zip(prompts, continuations, strict=True):
            tail = self._tokenizer.encode(text, add_special_tokens=False).ids
            row = (self.encode(prompt) + tail)[-self.context :]
            rows.append(row)
            tails.append(min(len(tail), len(row) - 1))
        buckets: dict[int, list[int]] = {}
        for index, row in enumerate(rows):
            buckets.setdefault(len(row), []).append(index)
        found = [0.0] * len(rows)
        for length, members in buckets.items():
            for start in range(0, len(members), self.batch_size):
                part = members[start : start + self.batch_size]
                logp = torch.log_softmax(self.logits([rows[i] for i in part]) / temperature, -1)
                for j, index in enumerate(part):
                    ids = torch.tensor(rows[index][length - tails[index] :], dtype=torch.long)
                    steps = logp[j, length - tails[index] - 1 : length - 1]
                    found[index] = float(steps.gather(-1, ids[:, None]).sum())
        return found

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int | None = None,
        top_k: int = 0,
        batch_size: int | None = None,
    ) -> list[Completion]:
        """One completion per prompt, in order: greedy at ``temperature`` 0, else sampled."""
        if max_tokens < 0 or temperature < 0 or top_k < 0:
            raise ValueError("max_tokens, temperature and top_k cannot be negative")
        encoded = [self.encode(prompt) for prompt in prompts]
        buckets: dict[int, list[int]] = {}
        for index, ids in enumerate(encoded):
            buckets.setdefault(len(ids), []).append(index)
        done: dict[int, Completion] = {}
        size = max(1, batch_size or self.batch_size)
        for members in buckets.values():
            for start in range(0, len(members), size):
                part = members[start : start + size]
                rows = [list(encoded[i]) for i in part]
                seeds = [_row_seed(seed, prompts[i]) for i in part]
                steps = _Steps(self, rows, seeds, temperature, top_k)
                done.update(zip(part, steps.run(max_tokens), strict=True))
        return [done[index] for index in range(len(prompts))]


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


class _Steps:
    """Token-by-token decoding of equal-length rows (finished rows drop out)."""

    def __init__(
        self, model: LocalModel, rows: list[list[int]], seeds: list[int], temp: float, top_k: int
    ) -> None:
        import torch

        self._torch = torch
        self.model, self.rows, self.temperature, self.top_k = model, rows, temp, top_k
        self.start = len(rows[0])
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.chosen: list[list[int]] = [[] for _ in rows]
        self.logprobs: list[list[float]] = [[] for _ in rows]
        self.tops: list[list[TopLogprobs]] = [[] for _ in rows]

    def run(self, max_tokens: int) -> list[Completion]:
        active = list(range(len(self.rows)))
        finished: set[int] = set()
        for _ in range(max_tokens):
            if not active:
                break
            for index, token in zip(active, self._step(active), strict=True):
                self.rows[index].append(token)
                self.chosen[index].append(token)
                if token in self.model.eos_ids:
                    finished.add(index)
            active = [index for index in active if index not in finished]
        return [self._completion(i, i in finished) for i in range(len(self.rows))]

    def _step(self, active: list[int]) -> list[int]:
        torch = self._torch
        last = self.model.last_logits([self.rows[i] for i in active])
        scaled = last / self.temperature if self.temperature > 0 else last
        logp = torch.log_softmax(scaled, dim=-1)
        tokens = []
        for row, index in enumerate(active):
            if self.temperature > 0:
                probs = logp[row].exp()
                token = int(torch.multinomial(probs, 1, generator=self.generators[index]))
            else:
                token = int(torch.argmax(logp[row]))
            tokens.append(token)
            self.logprobs[index].append(float(logp[row, token]))
            self.tops[index].append(self._top(logp[row]))
        return tokens

    def _top(self, logp: Any) -> TopLogprobs:
        if self.top_k == 0:
            return ()
        values, ids = self._torch.topk(logp, min(self.top_k, logp.shape[-1]))
        return tuple(
            (self.model.token_text(int(i)), float(v))
            for v, i in zip(values.tolist(), ids.tolist(), strict=True)
        )

    def _completion(self, index: int, stopped: bool) -> Completion:
        chosen = self.chosen[index]
        kept = [token for token in chosen if token not in self.model.eos_ids]
        return Completion(
            text=self.model.decode(kept),
            tokens=tuple(self.model.token_text(token) for token in chosen),
            token_logprobs=tuple(self.logprobs[index]),
            top_logprobs=tuple(self.tops[index]),
            finish_reason="stop" if stopped else "length",
            prompt_tokens=self.start,
        )


class LocalClient:
    """A ``Client`` over a local model folder (or an already loaded ``LocalModel``).

    ``system_prompt`` is prepended to every prompt; ``temperature``, when given, is
    forced on every query (next-token answers are then sampled, seeded by ``seed``
    and the prompt), as an endpoint serving the same weights may do.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | LocalModel,
        *,
        budget: int | None = None,
        cache: ResponseCache | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        system_prompt: str | None = None,
        temperature: float | None = None,
        seed: int = 0,
    ) -> None:
        self.model = path if isinstance(path, LocalModel) else LocalModel(path, device=device)
        self.batch_size = max(1, batch_size)
        self.system_prompt, self.temperature, self.seed = system_prompt, temperature, seed
        self._cache = cache
        self._meter = QueryMeter(str(self.model.path), budget)

    @property
    def name(self) -> str:
        return str(self.model.path)

    @property
    def queries(self) -> int:
        return self._meter.queries

    def _params(self, **extra: Any) -> dict[str, Any]:
        return {"system_prompt": self.system_prompt, **extra}

    def next_token(self, prompts: Sequence[str], *, top_k: int = 0) -> list[TokenAnswer]:
        temperature = self.temperature or 0.0
        seed = self.seed if temperature > 0 else None
        params = self._params(top_k=top_k, temperature=temperature, seed=seed)
        keys = [cache_key(self.model.identity, "next_token", p, params) for p in prompts]

        def run(indices: list[int]) -> list[Any]:
            texts = [compose_prompt(self.system_prompt, prompts[i]) for i in indices]
            done = self._complete(texts, max_tokens=1, temperature=temperature, seed=seed, k=top_k)
            return [_token_json(item, top_k) for item in done]

        answers = self._answer(keys, run)
        return [token_answer(value, cached) for value, cached in answers]

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int = 16,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        temperature = temperature if self.temperature is None else self.temperature
        params = self._params(max_tokens=max_tokens, temperature=temperature, seed=seed)
        cacheable = seed is not None or temperature == 0
        keys = [
            cache_key(self.model.identity, "generate", p, params) if cacheable else None
            for p in prompts
        ]

        def run(indices: list[int]) -> list[Any]:
            texts = [compose_prompt(self.system_prompt, prompts[i]) for i in indices]
            done = self._complete(texts, max_tokens=max_tokens, temperature=temperature, seed=seed)
            return [item.text for item in done]

        return [str(value) for value, _ in self._answer(keys, run)]

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], *, temperature: float
    ) -> list[float]:
        """Σ ln p of each continuation after its prompt, as this client samples (behind its
        system prompt, at its forced temperature if it has one). Local compute: no query."""
        texts = [compose_prompt(self.system_prompt, prompt) for prompt in prompts]
        return self.model.score(texts, continuations, temperature=self.temperature or temperature)

    def _complete(
        self, texts: list[str], *, max_tokens: int, temperature: float, seed: int | None, k: int = 0
    ) -> list[Completion]:
        return self.model.complete(
            texts,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            top_k=k,
            batch_size=self.batch_size,
        )

    def _answer(self, keys: Sequence[str | None], run: Any) -> list[tuple[Any, bool]]:
        return answer_through_cache(
            keys, cache=self._cache, meter=self._meter, run=run, chunk=self.batch_size
        )


def _token_json(completion: Completion, top_k: int) -> dict[str, Any]:
    top = logprob_map(completion.top_logprobs[0]) if top_k > 0 else None
    return {"token": completion.tokens[0], "logprobs": top}
