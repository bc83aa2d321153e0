"""Behaviour clients: the local model, the OpenAI-compatible client against the loopback
server (faults included), the response cache, the budget and the pacing arithmetic."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("torch")
pytest.importorskip("transformers")

from behavior_models import tiny_llama
from forebear.behavior.base import BudgetExhaustedError, Client, EndpointError
from forebear.behavior.cache import ResponseCache, ResponseCacheError, cache_key
from forebear.behavior.http import OpenAIClient
from forebear.behavior.local import LocalClient, LocalModel
from forebear.behavior.pacing import Backoff, TokenBucket, parse_retry_after
from forebear.behavior.server import MAX_BODY, MAX_PROMPTS, Faults, Served, serve_models

PROMPTS = [
    "def main(",
    "class ForebearError",
    "import os\n",
    "x",
    "    return self._render()",
    "Ünïcode — ✓ ",
    'raise ValueError("',
    "exit_code = " * 30,  # longer than the 64-token context: the last tokens are kept
]
SYSTEM = "# forebear behaviour test\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("behavior") / "tiny", seed=0)


@pytest.fixture(scope="module")
def model(folder: Path) -> LocalModel:
    return LocalModel(folder)


@pytest.fixture(scope="module")
def url(model: LocalModel) -> Iterator[str]:
    served = {
        "tiny": Served(model),
        "tiny-chat": Served(model, chat_only=True),
        "tiny-system": Served(model, system_prompt=SYSTEM),
        "tiny-hot": Served(model, temperature=1.5, seed=0),
    }
    with serve_models(served) as base:
        yield base


def _faulty(model: LocalModel, faults: Faults) -> Iterator[str]:
    with serve_models({"tiny": model}, faults=faults) as base:
        yield base


def exact(model: LocalModel, **options: object) -> LocalClient:
    """A local client running one prompt at a time, as the server does: the same float bits
    (batching may move log-probabilities in their last digits on CPU)."""
    return LocalClient(model, batch_size=1, **options)  # type: ignore[arg-type]


class Sleeps:
    """A sleep that records and does not wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


# --- the local model ---------------------------------------------------------------------


def test_local_next_token_is_the_argmax_of_a_direct_torch_run(folder: Path, model: LocalModel):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    direct = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    answers = LocalClient(model).next_token(PROMPTS, top_k=5)
    for prompt, answer in zip(PROMPTS, answers, strict=True):
        ids = tokenizer.encode(prompt, add_special_tokens=False).ids[-64:]
        with torch.no_grad():
            logits = direct(torch.tensor([ids])).logits[0, -1]
        logp = torch.log_softmax(logits, dim=-1)
        best = int(torch.argmax(logp))
        assert answer.token == ("" if best == 2 else tokenizer.decode([best]))
        assert answer.logprobs is not None
        assert max(answer.logprobs.values()) == pytest.approx(float(logp[best]), abs=1e-5)


def test_local_answers_are_deterministic_and_batching_moves_only_float_bits(model: LocalModel):
    first = LocalClient(model).next_token(PROMPTS, top_k=4)
    assert LocalClient(model).next_token(PROMPTS, top_k=4) == first
    single = list(reversed(exact(model).next_token(list(reversed(PROMPTS)), top_k=4)))
    assert [a.token for a in single] == [a.token for a in first]
    for one, many in zip(single, first, strict=True):
        assert one.logprobs is not None and many.logprobs is not None
        assert one.logprobs.keys() == many.logprobs.keys()
        assert list(one.logprobs.values()) == pytest.approx(list(many.logprobs.values()), abs=1e-4)
    assert LocalClient(model).next_token(PROMPTS) == [type(a)(a.token, None, False) for a in first]


def test_top_k_logprobs_are_a_sub_distribution_led_by_the_answer(model: LocalModel):
    for answer in LocalClient(model).next_token(PROMPTS, top_k=8):
        assert answer.logprobs is not None and 1 <= len(answer.logprobs) <= 8
        assert sum(math.exp(v) for v in answer.logprobs.values()) <= 1.0 + 1e-6
        assert max(answer.logprobs, key=answer.logprobs.__getitem__) == answer.token


def test_seeded_generation_repeats_and_does_not_depend_on_the_batch(model: LocalModel):
    client, prompts = exact(model), PROMPTS[:4]
    first = client.generate(prompts, max_tokens=4, seed=7)
    assert client.generate(prompts, max_tokens=4, seed=7) == first
    assert client.generate([prompts[3]], max_tokens=4, seed=7) == [first[3]]
    assert client.generate(prompts, max_tokens=4, seed=8) != first
    greedy = client.generate(PROMPTS[:2], max_tokens=1, temperature=0.0)
    assert greedy == [a.token for a in client.next_token(PROMPTS[:2])]


def test_local_client_is_a_client_named_by_its_folder(model: LocalModel, folder: Path):
    client = LocalClient(model)
    assert isinstance(client, Client)
    assert client.name == str(folder.resolve())


def test_a_folder_without_weights_is_refused_with_its_path(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"model folder has no config.json — give a"):
        LocalModel(tmp_path)


# --- the loopback server and the HTTP client --------------------------------------------


def test_completions_answers_equal_the_local_answers(model: LocalModel, url: str):
    local = exact(model)
    with OpenAIClient(url, "tiny", mode="completions") as remote:
        assert remote.next_token(PROMPTS, top_k=5) == local.next_token(PROMPTS, top_k=5)
        sampled = remote.generate(PROMPTS, max_tokens=6, temperature=0.9, seed=3)
        assert sampled == local.generate(PROMPTS, max_tokens=6, temperature=0.9, seed=3)
        assert remote.queries == remote.requests == 2 * len(PROMPTS)
        assert isinstance(remote, Client) and remote.name == f"{url}#tiny"


def test_a_chat_only_endpoint_is_found_and_remembered_in_auto_mode(model: LocalModel, url: str):
    local = exact(model).next_token(PROMPTS)
    with OpenAIClient(url, "tiny-chat") as remote:
        answers = remote.next_token(PROMPTS, top_k=5)
        assert remote.uses_chat
        assert remote.requests == len(PROMPTS) + 1  # one 404 from completions, then chat
    assert [a.token for a in answers] == [a.token for a in local]
    assert all(a.logprobs is None for a in answers)


def test_chat_with_logprobs_equals_the_local_answers(model: LocalModel, url: str):
    with OpenAIClient(url, "tiny", mode="chat") as remote:
        assert remote.next_token(PROMPTS, top_k=3) == exact(model).next_token(PROMPTS, top_k=3)


def test_completions_mode_against_a_chat_only_model_is_an_endpoint_error(url: str):
    with OpenAIClient(url, "tiny-chat", mode="completions") as remote:
        with pytest.raises(EndpointError, match=r"answered HTTP 404: this model is served"):
            remote.next_token(["x"])
        assert remote.queries == 0


def test_system_prompt_and_temperature_variants_are_served(model: LocalModel, url: str):
    plain = exact(model).next_token(PROMPTS, top_k=2)
    system = exact(model, system_prompt=SYSTEM).next_token(PROMPTS, top_k=2)
    hot = exact(model, temperature=1.5, seed=0).next_token(PROMPTS)
    with OpenAIClient(url, "tiny-system") as remote:
        assert remote.next_token(PROMPTS, top_k=2) == system
    with OpenAIClient(url, "tiny-hot") as remote:
        assert remote.next_token(PROMPTS) == hot
    assert system != plain
    assert [a.token for a in hot] != [a.token for a in plain]


def test_models_are_listed_and_hostile_requests_refused(url: str):
    with httpx.Client() as http:
        names = {m["id"] for m in http.get(f"{url}/models").json()["data"]}
        assert names == {"tiny", "tiny-chat", "tiny-system", "tiny-hot"}
        big = http.post(f"{url}/completions", content=b" " * (MAX_BODY + 1))
        assert big.status_code == 413
        many = {"model": "tiny", "prompt": ["a"] * (MAX_PROMPTS + 1), "max_tokens": 1}
        assert http.post(f"{url}/completions", json=many).status_code == 400
        unknown = http.post(f"{url}/completions", json={"model": "nope", "prompt": "a"})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["message"] == "the model 'nope' does not exist"
        assert http.post(f"{url}/completions", content=b"{not json").status_code == 400


def test_the_server_binds_loopback_only_and_stops_cleanly(model: LocalModel):
    with (
        pytest.raises(ValueError, match=r"binds 127\.0\.0\.1 only"),
        serve_models({"tiny": model}, host="0.0.0.0"),
    ):
        pass
    with serve_models({"tiny": model}) as base:
        assert httpx.get(f"{base}/models").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/models")


# --- the cache and the budget -----------------------------------------------------------


def test_a_cached_rerun_costs_nothing_and_answers_the_same(model: LocalModel, tmp_path: Path):
    with ResponseCache(tmp_path / "answers.sqlite") as cache:
        client = LocalClient(model, cache=cache)
        first = client.next_token(PROMPTS, top_k=3)
        seeded = client.generate(PROMPTS, max_tokens=4, seed=1)
        again = LocalClient(model, cache=cache, budget=0)
        answers = again.next_token(PROMPTS, top_k=3)
        assert again.queries == 0 and all(a.cached for a in answers)
        assert [(a.token, a.logprobs) for a in answers] == [(a.token, a.logprobs) for a in first]
        assert again.generate(PROMPTS, max_tokens=4, seed=1) == seeded
        with pytest.raises(BudgetExhaustedError):
            again.generate(PROMPTS[:1], max_tokens=4)  # unseeded and sampled: never cached
        with pytest.raises(BudgetExhaustedError):
            LocalClient(model, cache=cache, budget=0, system_prompt=SYSTEM).next_token(PROMPTS[:1])


def test_http_rerun_through_the_cache_sends_nothing(model: LocalModel, url: str, tmp_path: Path):
    path = tmp_path / "answers.sqlite"
    with ResponseCache(path) as cache, OpenAIClient(url, "tiny", cache=cache) as remote:
        first = remote.next_token(PROMPTS, top_k=2)
        seeded = remote.generate(PROMPTS[:2], max_tokens=4, seed=5)
    with ResponseCache(path) as cache, OpenAIClient(url, "tiny", cache=cache, budget=0) as again:
        answers = again.next_token(PROMPTS, top_k=2)
        assert again.generate(PROMPTS[:2], max_tokens=4, seed=5) == seeded
        assert again.requests == 0 and again.queries == 0
        with pytest.raises(BudgetExhaustedError):
            again.generate(PROMPTS[:1], max_tokens=4)  # unseeded: never cached
    assert [(a.token, a.logprobs) for a in answers] == [(a.token, a.logprobs) for a in first]


def test_the_api_key_never_reaches_the_cache(url: str, tmp_path: Path):
    secret = "sk-forebear-test-SECRET-0123456789"
    path = tmp_path / "answers.sqlite"
    with (
        ResponseCache(path) as cache,
        OpenAIClient(url, "tiny", api_key=secret, cache=cache) as remote,
    ):
        remote.next_token(PROMPTS[:3], top_k=2)
        assert secret not in repr(remote)
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in stored and b"0123456789" not in stored


def test_a_corrupt_cache_file_is_one_clear_error_and_is_left_alone(tmp_path: Path):
    path = tmp_path / "answers.sqlite"
    path.write_bytes(b"this is not an SQLite file, and it must not be wiped" * 100)
    before = path.read_bytes()
    with pytest.raises(ResponseCacheError) as caught:
        ResponseCache(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: is not a readable response cache")
    assert message.endswith(
        "— delete the file (its answers are re-queried) or give another cache path"
    )
    assert path.read_bytes() == before


def test_an_sqlite_file_of_another_kind_is_refused(tmp_path: Path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('format', 'something-else')")
    with pytest.raises(ResponseCacheError, match="an SQLite file of another kind"):
        ResponseCache(path)


def test_two_cache_handles_share_one_file(tmp_path: Path):
    path = tmp_path / "shared.sqlite"
    with ResponseCache(path) as writer, ResponseCache(path) as reader:
        key = cache_key({"endpoint": "e", "model": "m"}, "next_token", "p", {"top_k": 0})
        writer.put(key, {"token": "a", "logprobs": None})
        assert reader.get(key) == {"token": "a", "logprobs": None}
        writer.put(key, {"token": "b", "logprobs": None})  # the first answer stands
        assert len(reader) == 1 and reader.get(key)["token"] == "a"


@given(st.sampled_from(["top_k", "temperature", "seed", "max_tokens", "system_prompt"]))
def test_every_parameter_is_part_of_the_cache_key(name: str):
    params = {"top_k": 0, "temperature": 0.0, "seed": None, "max_tokens": 1, "system_prompt": None}
    changed = {**params, name: 1 if params[name] in (None, 0, 0.0) else 2}
    identity = {"local": "/m", "sha256": "ab"}
    assert cache_key(identity, "q", "p", params) != cache_key(identity, "q", "p", changed)


def test_an_exhausted_budget_stops_before_anything_is_sent(model: LocalModel, url: str):
    local = LocalClient(model, budget=3)
    with pytest.raises(BudgetExhaustedError, match=r"4 more queries would pass the budget of 3"):
        local.next_token(PROMPTS[:4])
    assert local.queries == 0
    local.next_token(PROMPTS[:3])
    assert local.queries == 3
    with OpenAIClient(url, "tiny", budget=2) as remote:
        with pytest.raises(BudgetExhaustedError, match="nothing was sent"):
            remote.next_token(PROMPTS[:3])
        assert remote.requests == 0


# --- faults ------------------------------------------------------------------------------


def test_429_with_retry_after_is_waited_out_and_answers_are_unchanged(model: LocalModel):
    sleeps = Sleeps()
    faults = Faults(rate_limited=3, retry_after="0.25")
    for base in _faulty(model, faults):
        with OpenAIClient(base, "tiny", backoff=0.001, sleep=sleeps) as remote:
            answers = remote.next_token(PROMPTS, top_k=3)
            assert remote.requests == len(PROMPTS) + 3 and remote.queries == len(PROMPTS)
    assert answers == exact(model).next_token(PROMPTS, top_k=3)
    assert sleeps.waits == [0.25, 0.25, 0.25]


def test_timeouts_and_500s_are_retried_to_the_same_answers(model: LocalModel):
    faults = Faults(slow_every=3, slow=1.0, error_every=5)
    for base in _faulty(model, faults):
        with OpenAIClient(base, "tiny", timeout=0.3, backoff=0.001, sleep=Sleeps()) as remote:
            answers = remote.next_token(PROMPTS, top_k=2)
            assert remote.requests > len(PROMPTS)
    assert answers == exact(model).next_token(PROMPTS, top_k=2)


def test_a_malformed_answer_is_asked_again_once(model: LocalModel):
    for base in _faulty(model, Faults(malformed_every=2)):
        with OpenAIClient(base, "tiny", backoff=0.001, sleep=Sleeps()) as remote:
            assert remote.next_token(PROMPTS, top_k=2) == exact(model).next_token(PROMPTS, top_k=2)


@pytest.mark.parametrize(
    ("faults", "why"),
    [
        (Faults(malformed_every=1), "the body is not JSON"),
        (Faults(missing_every=1), "no field choices.0"),
    ],
)
def test_persistently_malformed_answers_are_an_error_never_a_guess(
    model: LocalModel, faults: Faults, why: str
):
    for base in _faulty(model, faults):
        with OpenAIClient(base, "tiny", backoff=0.001, sleep=Sleeps()) as remote:
            with pytest.raises(EndpointError) as caught:
                remote.next_token(["def main("])
            assert remote.requests == 2 and remote.queries == 0
    assert str(caught.value) == (
        f"{base}/completions: answered twice in a shape that cannot be read ({why}) "
        "(model tiny) — check the endpoint and try again later; answers already received are cached"
    )


def test_retries_run_out_into_an_endpoint_error(model: LocalModel):
    for base in _faulty(model, Faults(error_every=1)):
        with OpenAIClient(base, "tiny", retries=2, backoff=0.001, sleep=Sleeps()) as remote:
            with pytest.raises(EndpointError, match=r"failed 3 times \(last: HTTP 500\)"):
                remote.next_token(["x"])
            assert remote.requests == 3


def test_an_unreachable_endpoint_is_an_endpoint_error():
    remote = OpenAIClient("http://127.0.0.1:9/v1", "m", retries=1, sleep=Sleeps())
    with remote, pytest.raises(EndpointError, match="failed 2 times"):
        remote.next_token(["x"])


# --- pacing ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_token_bucket_spaces_requests_to_its_rate():
    clock = FakeClock()
    bucket = TokenBucket(4.0, burst=2, clock=clock, sleep=clock.sleep)
    waits = [bucket.acquire() for _ in range(6)]
    assert waits == pytest.approx([0, 0, 0.25, 0.25, 0.25, 0.25])
    clock.now += 10  # idle time refills to the burst, no further
    assert [bucket.acquire() for _ in range(3)] == pytest.approx([0, 0, 0.25])


@given(st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=40))
def test_the_bucket_never_exceeds_rate_plus_burst(gaps: list[float]):
    clock = FakeClock()
    bucket = TokenBucket(5.0, burst=3, clock=clock, sleep=clock.sleep)
    times = []
    for gap in gaps:
        clock.now += gap
        bucket.acquire()
        times.append(clock.now)
    for i, start in enumerate(times):
        inside = [t for t in times[i:] if t - start < 1.0]
        assert len(inside) <= 3 + 5 * 1.0 + 1e-9


def test_backoff_is_seeded_exponential_and_honours_retry_after():
    one, two = Backoff(base=0.5, seed=3), Backoff(base=0.5, seed=3)
    waits = [one.wait(n) for n in (1, 2, 3)]
    assert waits == [two.wait(n) for n in (1, 2, 3)]
    assert 0.5 <= waits[0] < 1.0 and 1.0 <= waits[1] < 2.0 and 2.0 <= waits[2] < 4.0
    assert Backoff(base=0.01).wait(1, retry_after=7.0) == 7.0
    assert Backoff(base=0.01, max_wait=5.0).wait(1, retry_after=7.0) == 5.0


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_retry_after("2.5") == 2.5
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30
    )
    assert (
        parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0
    )
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_the_http_client_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import forebear.behavior.http, forebear.behavior.cache, forebear.behavior.server"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
