"""Causal-LM training on CPU: pre-training, fine-tuning and distillation of zoo models.

All three run one loop: AdamW with a short linear warm-up and cosine decay,
gradient clipping, windows of ``seq_len + 1`` tokens drawn from the token
stream by a numpy Generator seeded with ``seed``. Weight initialisation and
the data order both come from ``seed``, the global torch RNG is forked (the
caller's random state is left alone) and deterministic algorithms are
switched on for the run, so one spec on one machine gives the same bytes.

``pretrain`` starts from a fresh initialisation, ``finetune`` from given
weights, ``distill`` trains a fresh student on a teacher's softened logits
(KL divergence, Hinton's T² scaling) with no access to the teacher's weights.
Each returns ``Trained``: the new state dict (numpy, HF names) and the loss
curve. This module owns the loop; it chooses no hyper-parameters for the zoo
(profiles do) and writes no files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from forebear.zoo.families import build_model, load_model, state_of
from forebear.zoo.tokenization import Tokens
from forebear.zoo.transforms.base import State

__all__ = [
    "BATCH",
    "SEQ_LEN",
    "Trained",
    "batches",
    "causal_lm_loss",
    "deterministic",
    "distill",
    "finetune",
    "pretrain",
    "train_model",
]

SEQ_LEN = 64
BATCH = 16
_WARMUP = 0.1  # fraction of the steps spent warming the learning rate up
_CLIP = 1.0
_LOG_POINTS = 20  # the loss curve keeps this many averaged points

LossFn = Callable[[Any, Any], Any]  # (model, input batch) -> scalar loss tensor


@dataclass(frozen=True)
class Trained:
    state: State
    losses: tuple[float, ...]  # mean training loss over consecutive stretches of steps
    steps: int
    seconds: float

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else float("nan")

    @property
    def last_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def batches(
    tokens: Tokens, steps: int, seed: int, *, batch: int = BATCH, seq_len: int = SEQ_LEN
) -> Iterator[npt.NDArray[np.int64]]:
    """``steps`` arrays of shape (batch, seq_len + 1): windows at seeded random offsets."""
    if tokens.ndim != 1 or tokens.size < seq_len + 2:
        raise ValueError(f"need a 1-D token stream longer than {seq_len + 1}, got {tokens.shape}")
    rng = np.random.default_rng(seed)
    window = np.arange(seq_len + 1)
    for _ in range(steps):
        starts = rng.integers(0, tokens.size - seq_len - 1, size=batch)
        yield tokens[starts[:, None] + window]


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seeded torch with deterministic kernels, both restored on exit."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(before)


def _learning_rate(step: int, steps: int, peak: float) -> float:
    warmup = max(1, int(steps * _WARMUP))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1.0 + float(np.cos(np.pi * progress)))


def _curve(losses: list[float]) -> tuple[float, ...]:
    chunks = np.array_split(np.asarray(losses, dtype=np.float64), min(_LOG_POINTS, len(losses)))
    return tuple(round(float(chunk.mean()), 6) for chunk in chunks if chunk.size)


def causal_lm_loss(model: Any, window: Any) -> Any:
    """Mean next-token cross-entropy of ``model`` on a (batch, seq_len + 1) window."""
    import torch.nn.functional as F

    logits = model(input_ids=window[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))


def train_model(
    model: Any, tokens: Tokens, steps: int, lr: float, seed: int, loss_fn: LossFn = causal_lm_loss
) -> tuple[float, ...]:
    """Train ``model`` in place on ``tokens``; returns the loss curve. Call inside
    ``deterministic`` for reproducible bytes."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01)
    model.train()
    losses = []
    for step, window in enumerate(batches(tokens, steps, seed)):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, steps, lr)
        loss = loss_fn(model, torch.from_numpy(window))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, _CLIP)
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return _curve(losses) if losses else ()


def _run(model: Any, tokens: Tokens, steps: int, lr: float, seed: int, loss_fn: LossFn) -> Trained:
    started = time.perf_counter()
    losses = train_model(model, tokens, steps, lr, seed, loss_fn)
    return Trained(state_of(model), losses, steps, time.perf_counter() - started)


def pretrain(
    config: Mapping[str, Any], tokens: Tokens, steps: int, lr: float, seed: int
) -> Trained:
    """A fresh model initialised from ``seed`` and trained on ``tokens``."""
    with deterministic(seed):
        model = build_model(config, seed)
        return _run(model, tokens, steps, lr, seed, causal_lm_loss)


def finetune(
    state: State, config: Mapping[str, Any], tokens: Tokens, steps: int, lr: float, seed: int
) -> Trained:
    """``state`` trained further on ``tokens``: every weight moves from where it was."""
    with deterministic(seed):
        model = load_model(config, state)
        return _run(model, tokens, steps, lr, seed, causal_lm_loss)


def _distillation_loss(teacher: Any, temperature: float) -> LossFn:
    import torch
    import torch.nn.functional as F

    def loss(student: Any, window: Any) -> Any:
        inputs = window[:, :-1]
        with torch.no_grad():
            target = F.log_softmax(teacher(input_ids=inputs).logits / temperature, dim=-1)
        predicted = F.log_softmax(student(input_ids=inputs).logits / temperature, dim=-1)
        divergence = F.kl_div(predicted, target, log_target=True, reduction="none").sum(-1)
        return divergence.mean() * temperature**2

    return loss


def distill(
    teacher_state: State,
    teacher_config: Mapping[str, Any],
    student_config: Mapping[str, Any],
    tokens: Tokens,
    steps: int,
    lr: float,
    seed: int,
    temperature: float = 1.0,
) -> Trained:
    """A fresh student (initialised from ``seed``) trained to match the teacher's next-token
    distributions on ``tokens``; the student must share the teacher's tokenizer."""
    if teacher_config.get("vocab_size") != student_config.get("vocab_size"):
        raise ValueError("a distilled student must share its teacher's vocabulary")
    with deterministic(seed):
        teacher = load_model(teacher_config, teacher_state)
        student = build_model(student_config, seed)
        return _run(student, tokens, steps, lr, seed, _distillation_loss(teacher, temperature))
