"""Any OpenAI-compatible endpoint as a behaviour client, over httpx.

``next_token`` asks ``POST {base_url}/completions`` for one token at temperature 0
with ``logprobs=top_k`` (the legacy format: ``choices[0].text`` and
``choices[0].logprobs.top_logprobs[0]``); in ``mode="auto"`` an endpoint without
completions (404 or 405) is asked through ``POST {base_url}/chat/completions`` from
then on (the prompt as the one user message; ``logprobs``/``top_logprobs``, whose
absence gives ``logprobs=None``). ``base_url`` ends where the OpenAI SDK's does
(``…/v1``).

Every request waits for the rate limiter (``rate`` requests per second). A
timeout, a dropped connection, 408, 429 or a 5xx is retried up to ``retries`` times
with seeded exponential backoff, at least as long as ``Retry-After`` asks. An
answer that is not JSON, or lacks a field it must have, is asked once more and then
raises ``EndpointError``: an answer is never guessed. ``queries`` counts prompts the
endpoint answered (a retried prompt once), ``requests`` every HTTP request sent.
The API key goes in the Authorization header only: never into a cache key, an error
message or ``repr``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import httpx

from forebear.behavior.base import EndpointError, TokenAnswer
from forebear.behavior.cache import ResponseCache, cache_key
from forebear.behavior.pacing import Backoff, TokenBucket, parse_retry_after
from forebear.behavior.spending import QueryMeter, answer_through_cache, token_answer

__all__ = ["OpenAIClient"]

T = TypeVar("T")
Mode = Literal["auto", "completions", "chat"]
_RETRIED = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_HINT = "check the endpoint and try again later; answers already received are cached"


class _Transient(Exception):
    def __init__(self, why: str, retry_after: float | None = None) -> None:
        super().__init__(why)
        self.retry_after = retry_after


class _Malformed(Exception):
    """The answer cannot be read: asked once more, then an ``EndpointError``."""


class _Unsupported(Exception):
    """404 or 405: the endpoint does not offer this route (or this model)."""


def _field(data: Any, *path: str | int) -> Any:
    for step in path:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            raise _Malformed(f"no field {'.'.join(map(str, path))}") from None
    return data


def _text(data: Any, *path: str | int) -> str:
    value = _field(data, *path)
    if not isinstance(value, str):
        raise _Malformed(f"{'.'.join(map(str, path))} is not text")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Malformed(f"a log-probability that is not a number ({value!r:.40})")
    return float(value)


def _completion_logprobs(choice: Any) -> dict[str, float] | None:
    if choice.get("logprobs") is None:
        return None
    top = _field(choice, "logprobs", "top_logprobs", 0)
    if not isinstance(top, dict):
        raise _Malformed("logprobs.top_logprobs[0] is not an object")
    return {str(token): _number(value) for token, value in top.items()}


def _chat_logprobs(choice: Any) -> dict[str, float] | None:
    if choice.get("logprobs") is None:
        return None
    top = _field(choice, "logprobs", "content", 0, "top_logprobs")
    if not isinstance(top, list):
        raise _Malformed("logprobs.content[0].top_logprobs is not a list")
    found: dict[str, float] = {}
    for item in top:
        token, value = _text(item, "token"), _number(_field(item, "logprob"))
        found[token] = max(value, found.get(token, value))
    return found


def _choice(data: Any) -> Any:
    choice = _field(data, "choices", 0)
    if not isinstance(choice, dict):
        raise _Malformed("choices[0] is not an object")
    return choice


class OpenAIClient:
    """A ``Client`` over an OpenAI-compatible HTTP API (``base_url`` like ``…/v1``)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        budget: int | None = None,
        cache: ResponseCache | None = None,
        rate: float | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        mode: Mode = "auto",
        backoff: float = 0.5,
        max_wait: float = 60.0,
        seed: int = 0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if mode not in ("auto", "completions", "chat"):
            raise ValueError(f"mode must be auto, completions or chat (got {mode!r})")
        self.base_url, self.model, self.mode = base_url.rstrip("/"), model, mode
        self.retries = max(0, retries)
        self._chat = mode == "chat"
        self._key = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout, headers=headers, transport=transport)
        self._bucket = TokenBucket(rate, sleep=sleep) if rate else None
        self._backoff = Backoff(base=backoff, max_wait=max_wait, seed=seed)
        self._sleep = sleep
        self._cache = cache
        self._meter = QueryMeter(self.name, budget)
        self._sent = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAIClient({self.base_url!r}, {self.model!r}, mode={self.mode!r})"

    @property
    def name(self) -> str:
        return f"{self.base_url}#{self.model}"

    @property
    def queries(self) -> int:
        return self._meter.queries

    @property
    def requests(self) -> int:
        """HTTP requests sent, retries included."""
        with self._lock:
            return self._sent

    @property
    def uses_chat(self) -> bool:
        """Whether queries go to chat completions (asked for, or found in auto mode)."""
        return self._chat

    def _identity(self) -> dict[str, str]:
        return {"endpoint": self.base_url, "model": self.model, "mode": self.mode}

    def next_token(self, prompts: Sequence[str], *, top_k: int = 0) -> list[TokenAnswer]:
        if top_k < 0:
            raise ValueError(f"top_k cannot be negative (got {top_k})")
        params = {"top_k": top_k}
        keys = [cache_key(self._identity(), "next_token", p, params) for p in prompts]

        def run(indices: list[int]) -> list[Any]:
            return [self._next_token(prompts[i], top_k) for i in indices]

        answers = answer_through_cache(keys, cache=self._cache, meter=self._meter, run=run, chunk=1)
        return [token_answer(value, cached) for value, cached in answers]

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int = 16,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        params = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
        cacheable = seed is not None or temperature == 0
        keys = [
            cache_key(self._identity(), "generate", p, params) if cacheable else None
            for p in prompts
        ]

        def run(indices: list[int]) -> list[Any]:
            return [self._generate(prompts[i], params) for i in indices]

        answers = answer_through_cache(keys, cache=self._cache, meter=self._meter, run=run, chunk=1)
        return [str(value) for value, _ in answers]

    def _next_token(self, prompt: str, top_k: int) -> dict[str, Any]:
        base = {"model": self.model, "max_tokens": 1, "temperature": 0}
        if not self._chat:
            body = {**base, "prompt": prompt, **({"logprobs": top_k} if top_k else {})}
            found = self._routed("completions", body, _read_completion_token)
            if found is not None:
                return found
        chat = {"logprobs": True, "top_logprobs": top_k} if top_k else {}
        body = {**base, "messages": [{"role": "user", "content": prompt}], **chat}
        return self._ask("chat/completions", body, _read_chat_token)

    def _generate(self, prompt: str, params: Mapping[str, Any]) -> str:
        base = {"model": self.model, **{k: v for k, v in params.items() if v is not None}}
        if not self._chat:
            found = self._routed("completions", {**base, "prompt": prompt}, _read_completion_text)
            if found is not None:
                return found
        body = {**base, "messages": [{"role": "user", "content": prompt}]}
        return self._ask("chat/completions", body, _read_chat_text)

    def _routed(self, route: str, body: dict[str, Any], read: Callable[[Any], T]) -> T | None:
        """Completions, or None once an auto-mode client learns the endpoint lacks them."""
        try:
            return self._ask(route, body, read, unsupported_ok=self.mode == "auto")
        except _Unsupported:
            self._chat = True
            return None

    def _ask(
        self,
        route: str,
        body: dict[str, Any],
        read: Callable[[Any], T],
        unsupported_ok: bool = False,
    ) -> T:
        """One query: retried through transient failures, read once more if malformed."""
        url, failures, malformed = f"{self.base_url}/{route}", 0, 0
        while True:
            try:
                return read(self._attempt(url, body, unsupported_ok))
            except _Transient as fault:
                failures += 1
                if failures > self.retries:
                    raise self._error(url, f"failed {failures} times (last: {fault})") from None
                self._sleep(self._backoff.wait(failures, fault.retry_after))
            except _Malformed as fault:
                malformed += 1
                if malformed > 1:
                    raise self._error(
                        url, f"answered twice in a shape that cannot be read ({fault})"
                    ) from None
                self._sleep(self._backoff.wait(1))

    def _attempt(self, url: str, body: dict[str, Any], unsupported_ok: bool) -> Any:
        if self._bucket is not None:
            self._bucket.acquire()
        with self._lock:
            self._sent += 1
        try:
            response = self._http.post(url, json=body)
        except httpx.RequestError as error:
            raise _Transient(type(error).__name__) from None
        status = response.status_code
        if status in _RETRIED:
            after = parse_retry_after(response.headers.get("Retry-After"))
            raise _Transient(f"HTTP {status}", after)
        if status in (404, 405) and unsupported_ok:
            raise _Unsupported(status)
        if status != 200:
            raise self._error(url, f"answered HTTP {status}: {_excerpt(response)}")
        try:
            return response.json()
        except ValueError:
            raise _Malformed("the body is not JSON") from None

    def _error(self, url: str, message: str) -> EndpointError:
        if self._key:
            message = message.replace(self._key, "***")
        return EndpointError(f"{message} (model {self.model})", path=url, hint=_HINT)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _excerpt(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    return " ".join(str(message).split())[:200] or "(no message)"


def _read_completion_token(data: Any) -> dict[str, Any]:
    choice = _choice(data)
    return {"token": _text(choice, "text"), "logprobs": _completion_logprobs(choice)}


def _read_chat_token(data: Any) -> dict[str, Any]:
    choice = _choice(data)
    return {"token": _text(choice, "message", "content"), "logprobs": _chat_logprobs(choice)}


def _read_completion_text(data: Any) -> str:
    return _text(_choice(data), "text")


def _read_chat_text(data: Any) -> str:
    return _text(_choice(data), "message", "content")
