"""Building a zoo: every model of a profile, in dependency order, cached by content.

``build_zoo(profile, out)`` trains or derives each ``ModelSpec`` of the
profile, writes it as a Hugging Face folder ``out/models/<name>`` (config,
safetensors, tokenizer, and ``zoo_record.json`` with its loss curve, timing,
ground-truth maps and cache key) and the ground-truth ``out/manifest.json``,
whose pairs come from ``derive_pairs``.

Each model is cached under ``cache/models/<key>``, where the key hashes its
spec, its parents' keys, the corpus and tokenizer bytes it reads, the
forebear version and ``RECIPE`` (bumped when training code changes what it
produces): a rebuild with nothing changed trains nothing, and a changed spec
rebuilds exactly the models downstream of it. Corpora, tokenizers and token
streams are cached there too.

Registered transformations (``forebear.zoo.transforms``) are called as
``fn(parent_state, parent_config, rng, **spec.params, **context)`` where
``context`` holds, only for the keywords the function declares:
``tokenizer_json`` (the parent's), ``new_tokenizer_json`` (the spec's
tokenizer), ``corpus`` (lines of the spec's data), ``others`` (the states
of the second and later parents) and ``base`` (the first parent's own first
parent, or None). A merge, whose first parameter is ``states``, is called as
``fn(parent_states, parent_configs, rng=rng, **spec.params, **context)``.

This module owns orchestration and caching; training is ``train``'s and
``lora``'s, the folder layout ``folders``', the lists and their validation
``profiles``'. It never
prints: progress goes to the ``progress`` callback.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forebear import __version__
from forebear.errors import ForebearError
from forebear.zoo.corpus import Corpus, load_corpus
from forebear.zoo.folders import load_folder, save_folder
from forebear.zoo.manifest import Manifest, ModelEntry, derive_pairs
from forebear.zoo.profiles import (
    TRAINING_TRANSFORMATIONS,
    ModelSpec,
    check_specs,
    is_storage,
    load_transformations,
    profile_specs,
    takes_many,
)
from forebear.zoo.tokenization import TOKENIZERS, Tokens, corpus_tokens, load_tokenizer
from forebear.zoo.transforms.base import State

__all__ = [
    "RECIPE",
    "RECORD",
    "BuiltModel",
    "ZooBuild",
    "build_zoo",
    "run_build",
]

RECIPE = 1
RECORD = "zoo_record.json"
Progress = Callable[[str], None]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Workshop:
    """Corpora, tokenizers and token streams, each made once and kept in the cache folder."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self._corpora: dict[str, Corpus] = {}
        self._tokenizers: dict[str, bytes] = {}
        self.models: dict[str, BuiltModel] = {}  # built so far, by name

    def corpus(self, name: str) -> Corpus:
        if name not in self._corpora:
            self._corpora[name] = load_corpus(name, cache=self.cache)
        return self._corpora[name]

    def tokenizer(self, name: str) -> bytes:
        if name not in self._tokenizers:
            corpus = self.corpus(TOKENIZERS[name].corpus)
            self._tokenizers[name] = load_tokenizer(name, corpus, self.cache)
        return self._tokenizers[name]

    def tokens(self, corpus: str, tokenizer_json: bytes) -> tuple[Tokens, Tokens]:
        return corpus_tokens(self.corpus(corpus), tokenizer_json, self.cache)

    def used(self) -> dict[str, str]:
        found = {name: corpus.sha256 for name, corpus in sorted(self._corpora.items())}
        found |= {name: _digest(data) for name, data in sorted(self._tokenizers.items())}
        return found


@dataclass(frozen=True)
class BuiltModel:
    spec: ModelSpec
    key: str
    state: State
    config: dict[str, Any]
    tokenizer_json: bytes
    record: Mapping[str, Any]  # what zoo_record.json holds
    cached: bool = False

    @property
    def data(self) -> str | None:
        value = self.record.get("data")
        return value if isinstance(value, str) else None

    @property
    def tokenizer(self) -> str:
        return str(self.record["tokenizer"])


@dataclass(frozen=True)
class ZooBuild:
    manifest: Manifest
    built: tuple[str, ...]
    cached: tuple[str, ...]
    seconds: float
    timings: Mapping[str, float] = field(default_factory=dict)  # training seconds per model


def _spec_json(spec: ModelSpec) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(spec), sort_keys=True, default=list))  # type: ignore[no-any-return]


def _key(spec: ModelSpec, parents: Sequence[BuiltModel], shop: _Workshop) -> str:
    inputs: dict[str, str] = {}
    if spec.data is not None:
        inputs["data"] = shop.corpus(spec.data).sha256
    if spec.tokenizer is not None:
        inputs["tokenizer"] = _digest(shop.tokenizer(spec.tokenizer))
    identity = {
        "recipe": RECIPE,
        "forebear": __version__,
        "spec": _spec_json(spec),
        "parents": [parent.key for parent in parents],
        "inputs": inputs,
    }
    return _digest(json.dumps(identity, sort_keys=True).encode("utf-8"))


@dataclass(frozen=True)
class _Made:
    state: State
    config: dict[str, Any]
    tokenizer_json: bytes
    record: dict[str, Any]


def _training_record(losses: Sequence[float], seconds: float, **extra: Any) -> dict[str, Any]:
    return {"losses": list(losses), "train_seconds": round(seconds, 3), **extra}


def _make_base(spec: ModelSpec, shop: _Workshop) -> _Made:
    from forebear.zoo.families import tiny_config
    from forebear.zoo.tokenization import special_token_ids, vocab_size_of
    from forebear.zoo.train import pretrain

    assert spec.data is not None and spec.tokenizer is not None  # checked by check_specs
    tokenizer = shop.tokenizer(spec.tokenizer)
    config = tiny_config(
        spec.family, vocab_size_of(tokenizer), special_token_ids(tokenizer), spec.config
    )
    trained = pretrain(config, shop.tokens(spec.data, tokenizer)[0], spec.steps, spec.lr, spec.seed)
    params = {"steps": spec.steps, "lr": spec.lr, **spec.config}
    record = _training_record(trained.losses, trained.seconds, params=params)
    return _Made(trained.state, config, tokenizer, record | {"tokenizer": spec.tokenizer})


def _data_of(spec: ModelSpec, parent: BuiltModel) -> str:
    data = spec.data or parent.data
    if data is None:
        raise ForebearError(
            f"zoo model {spec.name!r} names no corpus to train on, and neither does its parent",
            hint="fix the profile in forebear.zoo.profiles",
        )
    return data


def _make_trained(spec: ModelSpec, parent: BuiltModel, shop: _Workshop) -> _Made:
    from forebear.zoo.families import tiny_config
    from forebear.zoo.lora import lora_merge
    from forebear.zoo.train import distill, finetune

    tokens = shop.tokens(_data_of(spec, parent), parent.tokenizer_json)[0]
    params = {"steps": spec.steps, "lr": spec.lr, **spec.params}
    config = parent.config
    started = time.perf_counter()
    if spec.transformation == "lora_merge":
        derived, losses = lora_merge(
            parent.state, config, tokens, steps=spec.steps, lr=spec.lr, seed=spec.seed,
            rank=int(spec.params["rank"]), alpha=float(spec.params["alpha"]),
        )  # fmt: skip
        seconds = time.perf_counter() - started
        record = _training_record(losses, seconds, params={**params, **derived.params})
        return _Made(derived.state, config, parent.tokenizer_json, record)
    if spec.transformation == "distillation":
        from forebear.zoo.tokenization import special_token_ids

        special = special_token_ids(parent.tokenizer_json)
        config = tiny_config(spec.family, int(parent.config["vocab_size"]), special, spec.config)
        temperature = float(spec.params.get("temperature", 1.0))
        trained = distill(
            parent.state, parent.config, config, tokens, spec.steps, spec.lr, spec.seed,
            temperature,
        )  # fmt: skip
        params |= dict(spec.config)
    else:
        trained = finetune(parent.state, config, tokens, spec.steps, spec.lr, spec.seed)
    record = _training_record(trained.losses, time.perf_counter() - started, params=params)
    return _Made(trained.state, config, parent.tokenizer_json, record)


def _context(
    spec: ModelSpec, parents: Sequence[BuiltModel], shop: _Workshop, wanted: Mapping[str, Any]
) -> dict[str, Any]:
    """The context keywords of a registered transformation, made only if it declares them."""
    grandparents = parents[0].spec.parents
    makers: dict[str, Callable[[], Any]] = {
        "tokenizer_json": lambda: parents[0].tokenizer_json,
        "others": lambda: [parent.state for parent in parents[1:]],
        "corpus": lambda: shop.corpus(_data_of(spec, parents[0])).lines,
        # The model the merged fine-tunes started from (TIES's task vectors are relative to it).
        "base": lambda: shop.models[grandparents[0]].state if grandparents else None,
    }
    if spec.tokenizer is not None:
        name = spec.tokenizer
        makers["new_tokenizer_json"] = lambda: shop.tokenizer(name)
    return {key: make() for key, make in makers.items() if key in wanted}


def _make_registered(spec: ModelSpec, parents: Sequence[BuiltModel], shop: _Workshop) -> _Made:
    from forebear.zoo.train import finetune

    assert spec.transformation is not None  # checked by check_specs
    function = load_transformations()[spec.transformation]
    context = _context(spec, parents, shop, inspect.signature(function).parameters)
    rng = np.random.default_rng(spec.seed)
    if takes_many(function):
        states, configs = [p.state for p in parents], [p.config for p in parents]
        derived = function(states, configs, rng=rng, **spec.params, **context)
    else:
        derived = function(parents[0].state, parents[0].config, rng, **spec.params, **context)
    tokenizer_json = derived.tokenizer_json or parents[0].tokenizer_json
    record: dict[str, Any] = {
        "params": dict(derived.params),
        "function_preserving": derived.function_preserving,
        "maps": derived.maps,
    }
    state = derived.state
    if spec.retrain_steps > 0:
        tokens = shop.tokens(_data_of(spec, parents[0]), tokenizer_json)[0]
        trained = finetune(state, derived.config, tokens, spec.retrain_steps, spec.lr, spec.seed)
        state = trained.state
        record |= _training_record(trained.losses, trained.seconds)
        record["params"] |= {"retrain_steps": spec.retrain_steps, "lr": spec.lr}
    return _Made(state, dict(derived.config), tokenizer_json, record)


def _tokenizer_name(spec: ModelSpec, parent: BuiltModel, made: _Made) -> str:
    if spec.tokenizer is not None:
        return spec.tokenizer
    if made.tokenizer_json == parent.tokenizer_json:
        return parent.tokenizer
    return f"{parent.tokenizer}+{spec.name}"  # a tokenizer the transformation made


def _make(spec: ModelSpec, parents: Sequence[BuiltModel], shop: _Workshop) -> _Made:
    if spec.kind == "base":
        return _make_base(spec, shop)
    if spec.transformation in TRAINING_TRANSFORMATIONS:
        made = _make_trained(spec, parents[0], shop)
    else:
        made = _make_registered(spec, parents, shop)
    made.record["tokenizer"] = _tokenizer_name(spec, parents[0], made)
    return made


def _record_bytes(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _obtain_stored(spec: ModelSpec, parent: BuiltModel, key: str, folder: Path) -> BuiltModel:
    """A storage copy (recast, GPTQ, GGUF) of ``parent``, written by its ``STORAGE`` writer.

    Its files are whatever the writer produces (a folder or one ``.gguf``), so the
    copy cannot be reloaded as a state: a model derived from it would start from
    the parent's state, which is the copy's before rounding. Profiles make no
    children of copies."""
    from forebear.zoo.transforms.storage import STORAGE

    if (folder / RECORD).is_file():
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        return BuiltModel(
            spec, key, parent.state, parent.config, parent.tokenizer_json, record, cached=True
        )
    assert spec.transformation is not None  # checked by check_specs
    started = time.perf_counter()
    staging = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    written = STORAGE[spec.transformation](
        parent.state, parent.config, parent.tokenizer_json, staging, **spec.params
    )
    record = {
        "name": spec.name,
        "key": key,
        "spec": _spec_json(spec),
        "data": parent.data,
        "tokenizer": parent.tokenizer,
        "params": dict(spec.params),
        "function_preserving": False,
        "stored": written.relative_to(staging).as_posix(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    (staging / RECORD).write_bytes(_record_bytes(record))
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(folder)
    return BuiltModel(spec, key, parent.state, parent.config, parent.tokenizer_json, record)


def _obtain(spec: ModelSpec, parents: Sequence[BuiltModel], shop: _Workshop) -> BuiltModel:
    """The model from the cache if its key is there, else made and put there."""
    key = _key(spec, parents, shop)
    folder = shop.cache / "models" / key
    if is_storage(spec.transformation):
        return _obtain_stored(spec, parents[0], key, folder)
    if (folder / RECORD).is_file():
        state, config, tokenizer_json = load_folder(folder)
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        return BuiltModel(spec, key, state, config, tokenizer_json, record, cached=True)
    started = time.perf_counter()
    made = _make(spec, parents, shop)
    data = spec.data if spec.kind == "base" or not parents else _data_of(spec, parents[0])
    record = made.record | {"name": spec.name, "key": key, "spec": _spec_json(spec), "data": data}
    record["seconds"] = round(time.perf_counter() - started, 3)
    extra = {RECORD: _record_bytes(record)}
    save_folder(folder, made.state, made.config, made.tokenizer_json, extra)
    return BuiltModel(spec, key, made.state, made.config, made.tokenizer_json, record)


def _entry(model: BuiltModel) -> ModelEntry:
    spec = model.spec
    stored = str(model.record.get("stored", "."))
    return ModelEntry(
        name=spec.name,
        path=f"models/{spec.name}" + ("" if stored == "." else f"/{stored}"),
        family=spec.family,
        kind=spec.kind,
        parents=spec.parents,
        transformation=spec.transformation,
        params=dict(model.record.get("params", {})),
        seed=spec.seed,
        data=model.data,
        tokenizer=model.tokenizer,
    )


def _versions(shop: _Workshop, seconds: float) -> dict[str, str]:
    import safetensors
    import tokenizers
    import torch
    import transformers

    found = {
        "forebear": __version__,
        "recipe": str(RECIPE),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "build_seconds": f"{seconds:.1f}",
    }
    return found | {f"sha256:{name}": digest for name, digest in shop.used().items()}


def _publish(model: BuiltModel, cache: Path, out: Path) -> None:
    target = out / "models" / model.spec.name
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(cache / "models" / model.key, target)


def run_build(
    specs: Sequence[ModelSpec],
    out: Path,
    *,
    profile: str = "custom",
    cache: Path | None = None,
    progress: Progress | None = None,
) -> ZooBuild:
    """Build ``specs`` into ``out`` (see the module docstring); says what was built, cached."""
    say = progress or (lambda message: None)
    ordered = check_specs(specs)
    shop = _Workshop(cache if cache is not None else out / ".cache")
    started = time.perf_counter()
    done: dict[str, BuiltModel] = {}
    for index, spec in enumerate(ordered, 1):
        say(f"[{index}/{len(ordered)}] {spec.name}: {spec.transformation or 'pretrain'}")
        model = _obtain(spec, [done[p] for p in spec.parents], shop)
        _publish(model, shop.cache, out)
        done[spec.name] = shop.models[spec.name] = model
        losses = model.record.get("losses") or []
        curve = f", loss {losses[0]:.2f} -> {losses[-1]:.2f}" if losses else ""
        say(f"[{index}/{len(ordered)}] {spec.name}: {'cached' if model.cached else 'built'}{curve}")
    seconds = time.perf_counter() - started
    models = {spec.name: _entry(done[spec.name]) for spec in specs}
    manifest = Manifest(profile, models, derive_pairs(models), _versions(shop, seconds), out)
    manifest.write(out / "manifest.json")
    return ZooBuild(
        manifest=manifest,
        built=tuple(name for name, model in done.items() if not model.cached),
        cached=tuple(name for name, model in done.items() if model.cached),
        seconds=seconds,
        timings={name: float(model.record.get("seconds", 0.0)) for name, model in done.items()},
    )


def build_zoo(
    profile: str,
    out: Path,
    *,
    cache: Path | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Build the named profile (``mini`` or ``full``) into ``out`` and return its manifest."""
    specs = profile_specs(profile)
    return run_build(specs, out, profile=profile, cache=cache, progress=progress).manifest
