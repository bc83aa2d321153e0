"""The zoo as data: which models a profile holds, and how each one is made.

A ``ModelSpec`` names a model, its family, its kind (``base``, ``derived`` or
``distilled``), its parents and the transformation that made it, with the
seed, corpus, tokenizer and training budget it used. The builder reads
nothing else, so adding a model to the zoo is adding a line here.

Transformations are of two sorts. Training ones the builder runs itself
(``TRAINING_TRANSFORMATIONS``: light fine-tune, continued pre-training, LoRA
merge, distillation). Every other name is looked up in
``forebear.zoo.transforms.base.REGISTRY`` and called with the spec's
``params``; ``retrain_steps`` then fine-tunes the result (e.g. a permuted
model trained a little further, a pruned one healed).

Four profiles: ``mini`` (tests; ten models in about a minute on one core),
``full`` (the benchmark: the mini models trained longer, more bases per
family, and the registered transformations), ``calibration`` (eighteen
independent bases with seeds of their own: 153 distinct independent pairs for
measuring false-positive rates on models no test was tuned on), and ``behaviour`` (teachers,
their distilled students and independent models of the same data, for the behaviour
tier's benchmark). This module owns the lists and
their validation (``check_specs``, which also orders them parents first); it
builds nothing.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from forebear.errors import ForebearError
from forebear.zoo.manifest import Kind
from forebear.zoo.transforms.base import REGISTRY

__all__ = [
    "PROFILES",
    "TRAINING_TRANSFORMATIONS",
    "ModelSpec",
    "check_specs",
    "is_storage",
    "load_transformations",
    "profile_specs",
    "takes_many",
]

TRAINING_TRANSFORMATIONS = frozenset(
    {"light_finetune", "continued_pretraining", "lora_merge", "distillation"}
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    kind: Kind
    parents: tuple[str, ...] = ()
    transformation: str | None = None  # None for a base; "distillation" for a distilled model
    params: Mapping[str, Any] = field(default_factory=dict)  # passed to the transformation
    seed: int = 0  # initialisation (bases, students) and data order
    data: str | None = None  # corpus trained on; None = the first parent's
    tokenizer: str | None = None  # None = the first parent's; a vocab swap names its target
    steps: int = 0  # training steps (bases, fine-tunes, students)
    lr: float = 0.0  # peak learning rate of ``steps`` and ``retrain_steps``
    retrain_steps: int = 0  # fine-tuning after a registered transformation
    config: Mapping[str, Any] = field(default_factory=dict)  # overrides of the tiny config


_PRETRAIN_LR = 3e-3
_FINETUNE_LR = 3e-4
_HINT = "fix the profile in forebear.zoo.profiles"


def _base(
    name: str,
    family: str,
    seed: int,
    data: str,
    tokenizer: str,
    steps: int,
    config: Mapping[str, Any] | None = None,
) -> ModelSpec:
    return ModelSpec(
        name,
        family,
        "base",
        seed=seed,
        data=data,
        tokenizer=tokenizer,
        steps=steps,
        lr=_PRETRAIN_LR,
        config=dict(config or {}),
    )


def _trained(
    name: str,
    parent: str,
    how: str,
    seed: int,
    data: str,
    steps: int,
    lr: float,
    *,
    family: str = "llama",
    config: Mapping[str, Any] | None = None,
    **params: Any,
) -> ModelSpec:
    kind: Kind = "distilled" if how == "distillation" else "derived"
    return ModelSpec(
        name,
        family,
        kind,
        (parent,),
        how,
        params=params,
        seed=seed,
        data=data,
        steps=steps,
        lr=lr,
        config=dict(config or {}),
    )


def _core(base_steps: int, config: Mapping[str, Any] | None = None) -> list[ModelSpec]:
    """The mini zoo: hard negatives, other data, another family, and llama-a's family tree."""
    light = max(10, base_steps // 5)
    return [
        _base("llama-a", "llama", 1, "corpus-a", "bpe-a", base_steps, config),
        _base("llama-b", "llama", 2, "corpus-a", "bpe-a", base_steps, config),  # hard negative
        _base("llama-c", "llama", 3, "corpus-b", "bpe-a", base_steps, config),
        _base("qwen2-a", "qwen2", 4, "corpus-b", "bpe-b", base_steps, config),
        _trained("llama-a-ft", "llama-a", "light_finetune", 11, "corpus-b", light, _FINETUNE_LR),
        _trained(
            "llama-a-cpt", "llama-a", "continued_pretraining", 12, "corpus-b", base_steps,
            _PRETRAIN_LR,
        ),
        _trained(
            "llama-a-lora", "llama-a", "lora_merge", 13, "corpus-b", 2 * light, 2e-3, rank=4,
            alpha=8.0,
        ),
        _trained(
            "llama-a-distill", "llama-a", "distillation", 14, "corpus-a", base_steps,
            _PRETRAIN_LR, config=config, temperature=1.0,
        ),
        _trained("llama-a-ft-ft", "llama-a-ft", "light_finetune", 15, "corpus-a", light,
                 _FINETUNE_LR),
        _trained("llama-a-ft2", "llama-a", "light_finetune", 16, "corpus-a", light, _FINETUNE_LR),
    ]  # fmt: skip


def _transformed(
    name: str, parent: str | tuple[str, ...], how: str, family: str, retrain: int, **params: Any
) -> ModelSpec:
    return ModelSpec(
        name,
        family,
        "derived",
        (parent,) if isinstance(parent, str) else parent,
        how,
        params=params,
        seed=100 + len(name),
        retrain_steps=retrain,
        lr=_FINETUNE_LR,
    )


def _copy(name: str, parent: str, how: str, family: str = "llama", **params: Any) -> ModelSpec:
    """A storage copy: same weights, another dtype or file format (no training)."""
    return ModelSpec(name, family, "derived", (parent,), how, params=params)


# The full profile's models are deeper than the mini's, so that depth surgery (a layer
# dropped, layers duplicated) leaves a layer map worth recovering.
_FULL_CONFIG: Mapping[str, Any] = {"num_hidden_layers": 4}


def _full() -> list[ModelSpec]:
    steps = 600
    light = steps // 5
    extra_bases = [
        _base("llama-d", "llama", 5, "corpus-b", "bpe-b", steps, _FULL_CONFIG),
        _base("qwen2-b", "qwen2", 6, "corpus-a", "bpe-b", steps, _FULL_CONFIG),
        _base("gpt_neox-a", "gpt_neox", 7, "corpus-a", "bpe-a", steps, _FULL_CONFIG),
        _base("gpt_neox-b", "gpt_neox", 8, "corpus-b", "bpe-b", steps, _FULL_CONFIG),
    ]
    other_families = [
        _trained("qwen2-a-ft", "qwen2-a", "light_finetune", 21, "corpus-a", light, _FINETUNE_LR,
                 family="qwen2"),
        _trained("gpt_neox-a-ft", "gpt_neox-a", "light_finetune", 22, "corpus-b", light,
                 _FINETUNE_LR, family="gpt_neox"),
        _trained("gpt_neox-a-cpt", "gpt_neox-a", "continued_pretraining", 23, "corpus-b", steps,
                 _PRETRAIN_LR, family="gpt_neox"),
        _copy("qwen2-a-q8_0", "qwen2-a", "gguf_q8_0", family="qwen2"),
    ]  # fmt: skip
    retrain = steps // 10
    transformed = [
        _transformed("llama-a-perm", "llama-a", "permute_all", "llama", retrain),
        _transformed("llama-a-rot", "llama-a", "rotate_residual", "llama", retrain),
        _transformed("llama-a-wprune", "llama-a", "width_prune", "llama", retrain, keep=0.75),
        _transformed("llama-a-dprune", "llama-a", "depth_prune", "llama", retrain, count=1),
        _transformed("llama-a-dup", "llama-a", "depth_upscale", "llama", retrain, mode="solar"),
        _transformed("llama-a-moe", "llama-a", "moe_upcycle", "mixtral", retrain, noise=0.01),
        _transformed("llama-a-vext", "llama-a", "vocab_extend", "llama", retrain, count=32),
        ModelSpec(
            "llama-a-vswap",
            "llama",
            "derived",
            ("llama-a",),
            "vocab_swap",
            seed=120,
            tokenizer="bpe-b",
            retrain_steps=retrain,
            lr=_FINETUNE_LR,
        ),
    ]
    fine_tunes = ("llama-a-ft", "llama-a-ft2")  # siblings; their common base is llama-a
    merges = [
        _transformed("llama-a-merge-linear", fine_tunes, "merge_linear", "llama", 0,
                     weights=[0.7, 0.3]),
        _transformed("llama-a-merge-slerp", fine_tunes, "merge_slerp", "llama", 0, t=0.4),
        _transformed("llama-a-merge-ties", fine_tunes, "merge_ties", "llama", 0, density=0.5),
        _transformed("llama-a-merge-ft", fine_tunes, "merge_linear", "llama", retrain),
    ]  # fmt: skip
    copies = [
        _copy("llama-a-fp16", "llama-a", "recast_fp16"),
        _copy("llama-a-bf16", "llama-a", "recast_bf16"),
        _copy("llama-a-int8", "llama-a", "int8", group_size=32),
        _copy("llama-a-q8_0", "llama-a", "gguf_q8_0"),
        _copy("llama-a-q6_k", "llama-a", "gguf_k"),
        _copy("llama-a-ft-q6_k", "llama-a-ft", "gguf_k"),
        _copy("llama-a-cpt-int8", "llama-a-cpt", "int8", group_size=32),
    ]
    return [
        *_core(steps, _FULL_CONFIG),
        *extra_bases,
        *other_families,
        *transformed,
        *merges,
        *copies,
    ]


def _calibration(count: int = 18, steps: int = 600) -> list[ModelSpec]:
    """Independent bases only, for measuring the false-positive rate of a test: every
    pair is a distinct independent lineage pair (the full profile's 335 independent pairs
    are 35 lineage pairs repeated through near-identical copies). Seeds, corpora and
    tokenizers are not the full profile's, so a test tuned there is measured here on
    models it has never seen."""
    families = ("llama", "qwen2", "gpt_neox")
    specs = []
    for index in range(count):
        family = families[index % len(families)]
        data = ("corpus-a", "corpus-b")[(index // 3) % 2]
        tokenizer = ("bpe-a", "bpe-b")[(index // 6) % 2]
        specs.append(
            _base(f"{family}-cal{index:02d}", family, 200 + index, data, tokenizer, steps,
                  _FULL_CONFIG)
        )  # fmt: skip
    return specs


def _behaviour(steps: int = 400) -> list[ModelSpec]:
    """The behaviour tier's zoo, all on ``bpe-a`` so token strings compare: four teachers;
    per teacher a distilled student (fresh init, another family, the teacher's data) and
    three independent models of the same data (two of the teacher's family, so every
    independent suspect has a control of its own architecture, one of the student's);
    light fine-tunes of two teachers on the other corpus."""
    teachers = [("llama", "corpus-a"), ("qwen2", "corpus-a"), ("gpt_neox", "corpus-b"),
                ("llama", "corpus-b")]  # fmt: skip
    student_family = {"llama": "qwen2", "qwen2": "llama", "gpt_neox": "llama"}
    specs = []
    for index, (family, data) in enumerate(teachers):
        name, other = f"teacher{index}-{family}", student_family[family]
        specs += [
            _base(name, family, 300 + index, data, "bpe-a", steps),
            _trained(f"{name}-student", name, "distillation", 310 + index, data, steps,
                     _PRETRAIN_LR, family=other, temperature=1.0),
            _base(f"{name}-indep0", family, 320 + index, data, "bpe-a", steps),
            _base(f"{name}-indep1", other, 330 + index, data, "bpe-a", steps),
            _base(f"{name}-indep2", family, 350 + index, data, "bpe-a", steps),
        ]  # fmt: skip
    for index, family, data in ((0, "llama", "corpus-b"), (2, "gpt_neox", "corpus-a")):
        specs.append(_trained(f"teacher{index}-{family}-ft", f"teacher{index}-{family}",
                              "light_finetune", 340 + index, data, steps // 5, _FINETUNE_LR,
                              family=family))  # fmt: skip
    return specs


PROFILES: Mapping[str, Sequence[ModelSpec]] = {
    "mini": _core(150),
    "full": _full(),
    "calibration": _calibration(),
    "behaviour": _behaviour(),
}


def profile_specs(profile: str) -> Sequence[ModelSpec]:
    if profile not in PROFILES:
        raise ForebearError(
            f"unknown zoo profile {profile!r}", hint=f"choose one of: {', '.join(PROFILES)}"
        )
    return PROFILES[profile]


def load_transformations() -> Mapping[str, Callable[..., Any]]:
    """Import every module of ``forebear.zoo.transforms`` so each registers itself."""
    import forebear.zoo.transforms as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return REGISTRY


def is_storage(name: str | None) -> bool:
    """Whether ``name`` is a storage copy (``forebear.zoo.transforms.storage.STORAGE``)."""
    load_transformations()
    from forebear.zoo.transforms.storage import STORAGE

    return name in STORAGE


def _fail(spec: ModelSpec, message: str) -> ForebearError:
    return ForebearError(f"zoo model {spec.name!r}: {message}", hint=_HINT)


def _check_transformation(spec: ModelSpec) -> None:
    name = spec.transformation
    if spec.kind == "base":
        if spec.parents or name is not None or not spec.data or not spec.tokenizer:
            raise _fail(spec, "a base names a corpus and a tokenizer, and no parents")
        return
    if not spec.parents or name is None:
        raise _fail(spec, f"a {spec.kind} model needs parents and a transformation")
    if (spec.kind == "distilled") != (name == "distillation"):
        raise _fail(spec, "kind 'distilled' goes with transformation 'distillation' only")
    if name in TRAINING_TRANSFORMATIONS:
        return
    if is_storage(name):
        from forebear.zoo.transforms.storage import STORAGE

        if len(spec.parents) != 1 or spec.retrain_steps:
            raise _fail(spec, "a storage copy has one parent and no retraining")
        try:
            inspect.signature(STORAGE[name]).bind(None, None, None, None, **spec.params)
        except TypeError as error:
            raise _fail(spec, f"params do not fit {name!r} ({error})") from None
        return
    function = load_transformations().get(name)
    if function is None:
        raise _fail(
            spec,
            f"transformation {name!r} is not registered "
            f"(known: {', '.join(sorted([*REGISTRY, *TRAINING_TRANSFORMATIONS, *_storage()]))})",
        )
    inputs = (None, None) if takes_many(function) else (None, None, None)
    try:
        inspect.signature(function).bind_partial(*inputs, **spec.params)
    except TypeError as error:
        raise _fail(spec, f"params do not fit {name!r} ({error})") from None


def _storage() -> list[str]:
    from forebear.zoo.transforms.storage import STORAGE

    return list(STORAGE)


def check_specs(specs: Sequence[ModelSpec]) -> list[ModelSpec]:
    """Validate a profile and return it in dependency order (parents before children)."""
    by_name: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.name in by_name:
            raise _fail(spec, "named twice in the profile")
        by_name[spec.name] = spec
    for spec in specs:
        _check_transformation(spec)
        for parent in spec.parents:
            if parent not in by_name:
                raise _fail(spec, f"names unknown parent {parent!r}")
    ordered: list[ModelSpec] = []
    placed: set[str] = set()
    while len(ordered) < len(specs):
        ready = [s for s in specs if s.name not in placed and set(s.parents) <= placed]
        if not ready:
            raise _fail(next(s for s in specs if s.name not in placed), "is its own ancestor")
        ordered.extend(ready)
        placed.update(s.name for s in ready)
    return ordered


def takes_many(function: Callable[..., Any]) -> bool:
    """Whether a transformation combines several models: ``fn(states, configs, *, rng, ...)``
    (merges) rather than ``fn(state, config, rng, ...)``."""
    return next(iter(inspect.signature(function).parameters), None) == "states"
