"""An OpenAI-compatible server on loopback, serving local models (for tests and benchmarks).

``serve_models({"name": Served(...)})`` answers ``GET /v1/models``,
``POST /v1/completions`` (a prompt or a list of them; ``max_tokens``,
``temperature``, ``logprobs`` as a top-k count, ``seed``) and
``POST /v1/chat/completions`` (the messages' text, system messages first;
``logprobs`` and ``top_logprobs``), in the shapes the OpenAI API uses. Each served
name can present one model differently — behind a system prompt, at a forced
temperature, or chat-only (completions answer 404 and chat gives no logprobs, as
many APIs do) — and ``Faults`` makes the server misbehave deterministically by
request number: 429 with ``Retry-After``, answers slower than a client's timeout,
bodies cut mid-JSON, answers missing their fields, 500s.

It runs on the standard library's ``ThreadingHTTPServer`` (no web extra), binds
127.0.0.1 only, and bounds request bodies and prompt counts. Answers come from
``LocalModel.complete``, so they equal a ``LocalClient``'s for the same model and
options. This module owns the wire format; it neither caches nor counts budgets.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from forebear.behavior.local import Completion, LocalModel, compose_prompt, logprob_map

__all__ = ["MAX_BODY", "MAX_PROMPTS", "Faults", "Served", "serve_models"]

MAX_BODY = 1 << 20  # bytes of one request body
MAX_PROMPTS = 64  # prompts in one completions request
MAX_TOKENS = 512
MAX_TOP = 20


@dataclass(frozen=True)
class Served:
    """One model as the server presents it under a name."""

    model: LocalModel | str | os.PathLike[str]
    system_prompt: str | None = None  # prepended to every prompt
    temperature: float | None = None  # forced on every request (None: the request's)
    chat_only: bool = False  # completions answer 404; chat answers carry no logprobs
    seed: int | None = None  # sampling seed for requests without one (None: fresh randomness)


@dataclass(frozen=True)
class Faults:
    """Misbehaviour by request number n (1-based, every POST counted): the first
    ``rate_limited`` answer 429; then every ``slow_every``-th waits ``slow`` seconds
    before answering, every ``malformed_every``-th is cut mid-JSON, every
    ``missing_every``-th lacks ``choices``, every ``error_every``-th is a 500."""

    rate_limited: int = 0
    retry_after: str = "0.1"  # the 429s' Retry-After: seconds, or an HTTP date
    slow_every: int = 0
    slow: float = 1.0
    malformed_every: int = 0
    missing_every: int = 0
    error_every: int = 0

    def pick(self, n: int) -> str | None:
        """The fault request ``n`` gets, or None."""
        if n <= self.rate_limited:
            return "rate_limited"
        for name, every in (
            ("slow", self.slow_every),
            ("malformed", self.malformed_every),
            ("missing", self.missing_every),
            ("error", self.error_every),
        ):
            if every and n % every == 0:
                return name
        return None


class _Refusal(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass
class _Service:
    models: Mapping[str, Served]
    loaded: Mapping[str, LocalModel]
    faults: Faults
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    compute: threading.Lock = field(default_factory=threading.Lock)

    def next_number(self) -> int:
        with self.lock:
            self.count += 1
            return self.count

    def served(self, body: Mapping[str, Any], chat: bool) -> tuple[str, Served, LocalModel]:
        name = body.get("model")
        if not isinstance(name, str) or name not in self.models:
            raise _Refusal(404, f"the model {name!r} does not exist", "model_not_found")
        served = self.models[name]
        if served.chat_only and not chat:
            raise _Refusal(404, "this model is served through chat completions only")
        return name, served, self.loaded[name]

    def run(
        self, served: Served, model: LocalModel, prompts: list[str], opts: Mapping[str, Any]
    ) -> list[Completion]:
        temperature = opts["temperature"] if served.temperature is None else served.temperature
        seed = opts["seed"] if opts["seed"] is not None else served.seed
        texts = [compose_prompt(served.system_prompt, prompt) for prompt in prompts]
        with self.compute:
            return model.complete(
                texts,
                max_tokens=opts["max_tokens"],
                temperature=temperature,
                seed=seed,
                top_k=opts["top_k"],
            )


def _integer(body: Mapping[str, Any], key: str, default: int | None, high: int) -> int | None:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise _Refusal(400, f"{key} must be an integer from 0 to {high}")
    return value


def _options(body: Mapping[str, Any], top_k: int) -> dict[str, Any]:
    temperature = body.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise _Refusal(400, "temperature must be a number")
    if not 0 <= temperature <= 2:
        raise _Refusal(400, "temperature must be from 0 to 2")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _Refusal(400, "seed must be an integer")
    max_tokens = _integer(body, "max_tokens", 16, MAX_TOKENS)
    return {
        "temperature": float(temperature),
        "seed": seed,
        "max_tokens": 16 if max_tokens is None else max_tokens,
        "top_k": top_k,
    }


def _prompts(body: Mapping[str, Any]) -> list[str]:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise _Refusal(400, "prompt must be a string or a list of strings")
    if not 1 <= len(prompts) <= MAX_PROMPTS:
        raise _Refusal(400, f"give 1 to {MAX_PROMPTS} prompts")
    return prompts


def _chat_text(body: Mapping[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Refusal(400, "messages must be a non-empty list")
    system: list[str] = []
    rest: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise _Refusal(400, "each message needs a text content")
        (system if message.get("role") == "system" else rest).append(content)
    return "".join(system) + "".join(rest)


def _usage(done: list[Completion]) -> dict[str, int]:
    prompt = sum(c.prompt_tokens for c in done)
    completion = sum(len(c.tokens) for c in done)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _complete(service: _Service, body: Mapping[str, Any], number: int) -> dict[str, Any]:
    name, served, model = service.served(body, chat=False)
    top_k = _integer(body, "logprobs", None, MAX_TOP)
    done = service.run(served, model, _prompts(body), _options(body, top_k or 0))
    choices = [
        {
            "index": index,
            "text": item.text,
            "finish_reason": item.finish_reason,
            "logprobs": None if top_k is None else _legacy_logprobs(item),
        }
        for index, item in enumerate(done)
    ]
    return _envelope(f"cmpl-{number}", "text_completion", name, choices, done)


def _legacy_logprobs(item: Completion) -> dict[str, Any]:
    return {
        "tokens": list(item.tokens),
        "token_logprobs": list(item.token_logprobs),
        "top_logprobs": [logprob_map(top) for top in item.top_logprobs],
    }


def _chat(service: _Service, body: Mapping[str, Any], number: int) -> dict[str, Any]:
    name, served, model = service.served(body, chat=True)
    wanted = body.get("logprobs") is True and not served.chat_only
    top_k = _integer(body, "top_logprobs", 0, MAX_TOP) if wanted else 0
    done = service.run(served, model, [_chat_text(body)], _options(body, top_k or 0))
    item = done[0]
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": item.text},
        "finish_reason": item.finish_reason,
        "logprobs": _chat_logprobs(item) if wanted else None,
    }
    return _envelope(f"chatcmpl-{number}", "chat.completion", name, [choice], done)


def _chat_logprobs(item: Completion) -> dict[str, Any]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    content = [
        {**entry(token, logprob), "top_logprobs": [entry(t, lp) for t, lp in top]}
        for token, logprob, top in zip(
            item.tokens, item.token_logprobs, item.top_logprobs, strict=True
        )
    ]
    return {"content": content}


def _envelope(
    ident: str, kind: str, name: str, choices: list[Any], done: list[Completion]
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": kind,
        "created": int(time.time()),
        "model": name,
        "choices": choices,
        "usage": _usage(done),
    }


_ROUTES = {"/v1/completions": _complete, "/v1/chat/completions": _chat}


class _Handler(BaseHTTPRequestHandler):
    service: _Service  # set on the subclass serve_models makes
    server_version = "forebear-loopback/1"

    def log_message(self, format: str, *args: Any) -> None:  # the library never prints
        return

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self._send_error(_Refusal(404, f"no route {self.path}"))
        data = [
            {"id": n, "object": "model", "created": 0, "owned_by": "forebear"}
            for n in self.service.models
        ]
        self._send(200, json.dumps({"object": "list", "data": data}).encode())

    def do_POST(self) -> None:
        number = self.service.next_number()
        fault = self.service.faults.pick(number)
        try:
            if fault is not None and self._misbehave(fault):
                return
            route = _ROUTES.get(self.path.rstrip("/"))
            if route is None:
                raise _Refusal(404, f"no route {self.path}")
            answer = route(self.service, self._body(), number)
        except _Refusal as refusal:
            return self._send_error(refusal)
        self._send(200, json.dumps(answer).encode())

    def _misbehave(self, fault: str) -> bool:
        """Act out ``fault``; True when that was the whole answer."""
        if fault == "rate_limited":
            headers = {"Retry-After": self.service.faults.retry_after}
            self._send_error(_Refusal(429, "rate limit reached", "rate_limit_exceeded"), headers)
        elif fault == "malformed":
            self._send(200, b'{"id": "cmpl-cut", "choices": [{"text": "')
        elif fault == "missing":
            self._send(200, b'{"id": "cmpl-empty", "object": "text_completion"}')
        elif fault == "error":
            self._send_error(_Refusal(500, "internal error", "server_error"))
        else:
            time.sleep(self.service.faults.slow)
            return False
        return True

    def _body(self) -> Mapping[str, Any]:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _Refusal(411, "a Content-Length is required")
        if int(length) > MAX_BODY:
            raise _Refusal(413, f"the body is over {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(int(length)))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _Refusal(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise _Refusal(400, "the body must be a JSON object")
        return body

    def _send_error(self, refusal: _Refusal, headers: Mapping[str, str] | None = None) -> None:
        error = {"message": refusal.message, "type": refusal.kind, "code": refusal.status}
        self._send(refusal.status, json.dumps({"error": error}).encode(), headers)

    def _send(self, status: int, payload: bytes, headers: Mapping[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout): nothing left to tell it


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


def _load(models: Mapping[str, Served | LocalModel | str | os.PathLike[str]]) -> _Service:
    served = {n: m if isinstance(m, Served) else Served(m) for n, m in models.items()}
    by_path: dict[Path, LocalModel] = {}
    loaded = {}
    for name, item in served.items():
        if isinstance(item.model, LocalModel):
            loaded[name] = item.model
            continue
        path = Path(item.model).resolve()
        loaded[name] = by_path[path] = by_path.get(path) or LocalModel(path)
    return _Service(served, loaded, Faults())


@contextmanager
def serve_models(
    models: Mapping[str, Served | LocalModel | str | os.PathLike[str]],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: Faults | None = None,
) -> Iterator[str]:
    """Serve ``models`` by name on loopback while the block runs; yields the base URL
    (``http://127.0.0.1:PORT/v1``, as an OpenAI client takes it)."""
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"the loopback server binds 127.0.0.1 only (asked for {host!r})")
    service = _load(models)
    service.faults = faults or Faults()
    handler = type("Handler", (_Handler,), {"service": service})
    server = _Server(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, name="forebear-loopback", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
