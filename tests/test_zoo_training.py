"""The zoo's ingredients on tiny runs: corpus, tokenizers, configs, training, LoRA, folders.

Everything here trains for a handful of steps on a small slice of the
standard-library corpus, so it runs in seconds; the built mini zoo is checked
in test_zoo_build.py.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from forebear.architectures import Role  # noqa: E402
from forebear.architectures.vocabulary import (  # noqa: E402
    shared_tokens,
    vocabulary_from_tokenizer_json,
)
from forebear.errors import CorruptCheckpointError, InputNotFoundError  # noqa: E402
from forebear.formats.memory import MemoryReader  # noqa: E402
from forebear.model import open_model  # noqa: E402
from forebear.zoo.corpus import CORPORA, assemble_corpus, corpus_of  # noqa: E402
from forebear.zoo.families import (  # noqa: E402
    FAMILIES,
    build_model,
    load_model,
    state_of,
    tiny_config,
)
from forebear.zoo.folders import load_folder, save_folder, weights_bytes  # noqa: E402
from forebear.zoo.lora import adapted_tensors, lora_merge  # noqa: E402
from forebear.zoo.tokenization import (  # noqa: E402
    TOKENIZERS,
    encode,
    special_token_ids,
    train_tokenizer,
    vocab_size_of,
)
from forebear.zoo.train import batches, distill, finetune, pretrain  # noqa: E402
from forebear.zoo.transforms.reparam import resolve_state  # noqa: E402

torch.set_num_threads(1)

BUDGET = 300_000  # bytes per corpus: enough for a real BPE and a few hundred thousand tokens


@functools.cache
def corpus(name: str) -> Any:
    return assemble_corpus(name, budget=BUDGET)


@functools.cache
def tokenizer(name: str) -> bytes:
    spec = TOKENIZERS[name]
    return train_tokenizer(corpus(spec.corpus).text, spec.vocab_size)


@functools.cache
def tokens(corpus_name: str, tokenizer_name: str) -> np.ndarray:
    return encode(tokenizer(tokenizer_name), corpus(corpus_name).text)


def config(family: str = "llama", **overrides: Any) -> dict[str, Any]:
    data = tokenizer("bpe-a")
    return tiny_config(family, vocab_size_of(data), special_token_ids(data), overrides)


def test_corpora_are_disjoint_deterministic_and_split_by_top_level_module() -> None:
    a, b = corpus("corpus-a"), corpus("corpus-b")
    assert a.files and b.files and not set(a.files) & set(b.files)
    assert {corpus_of(f) for f in a.files} == {"corpus-a"}
    assert {corpus_of(f) for f in b.files} == {"corpus-b"}
    assert corpus_of("json/decoder.py") == corpus_of("json/__init__.py")  # packages stay whole
    again = assemble_corpus("corpus-a", budget=BUDGET)
    assert again.sha256 == a.sha256 and again.files == a.files
    assert BUDGET - 2_000 < len(a.text.encode()) <= BUDGET  # the last file cut at a line


def test_corpus_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown corpus 'corpus-z'"):
        assemble_corpus("corpus-z")
    with pytest.raises(InputNotFoundError, match="no Python standard library here"):
        assemble_corpus(CORPORA[0], root=tmp_path / "missing")


def test_tokenizers_are_deterministic_and_overlap_partly() -> None:
    a, b = tokenizer("bpe-a"), tokenizer("bpe-b")
    assert train_tokenizer(corpus("corpus-a").text, 512) == a
    vocab_a = vocabulary_from_tokenizer_json(a, "bpe-a")
    vocab_b = vocabulary_from_tokenizer_json(b, "bpe-b")
    assert (vocab_a.size, vocab_b.size) == (512, 640)
    shared = len(shared_tokens(vocab_a, vocab_b)) / min(vocab_a.size, vocab_b.size)
    assert 0.30 < shared < 0.95
    assert special_token_ids(a) == {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


def test_encoding_round_trips_text() -> None:
    from tokenizers import Tokenizer

    text = corpus("corpus-a").text[:5000]
    ids = encode(tokenizer("bpe-a"), text)
    assert ids.dtype == np.int64 and 0 < ids.size < len(text)
    decoded = Tokenizer.from_str(tokenizer("bpe-a").decode()).decode(ids.tolist())
    assert decoded == text


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tiny_configs_resolve_by_role_with_dims_from_the_config(family: str) -> None:
    cfg = config(family)
    state = state_of(build_model(cfg, seed=0))
    resolved = resolve_state(state, cfg)
    up = resolved.read(Role.MLP_UP, 0)
    assert up.shape == (cfg["intermediate_size"], cfg["hidden_size"])
    assert resolved.read(Role.EMBED_TOKENS).shape == (cfg["vocab_size"], cfg["hidden_size"])
    if family == "qwen2":
        assert resolved.read(Role.ATTN_Q_BIAS, 0).shape == (cfg["hidden_size"],)


def test_tied_head_is_saved_once_and_loads_back(capfd: pytest.CaptureFixture[str]) -> None:
    cfg = config(tie_word_embeddings=True)
    model = build_model(cfg, seed=3)
    state = state_of(model)
    assert "lm_head.weight" not in state
    fresh = load_model(cfg, state)
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    assert np.array_equal(fresh.lm_head.weight.detach().numpy(), model.lm_head.weight.detach())
    assert capfd.readouterr() == ("", "")  # transformers' progress bars and warnings kept quiet


def test_load_model_refuses_a_state_that_does_not_fit() -> None:
    cfg = config()
    state = state_of(build_model(cfg, seed=0))
    del state["model.norm.weight"]
    with pytest.raises(ValueError, match=r"missing \['model.norm.weight'\], unexpected \[\]"):
        load_model(cfg, state)
    state = state_of(build_model(cfg, seed=0)) | {"extra.weight": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['extra.weight'\]"):
        load_model(cfg, state)


def test_gpt_neox_state_uses_checkpoint_names() -> None:
    cfg = config("gpt_neox")
    state = state_of(build_model(cfg, seed=0))
    assert "embed_out.weight" in state and "lm_head.weight" not in state
    again = state_of(load_model(cfg, state))
    assert all(np.array_equal(again[k], v) for k, v in state.items())


def test_batches_are_seeded_windows_of_the_stream() -> None:
    stream = np.arange(1000, dtype=np.int64)
    first = list(batches(stream, 3, seed=7, batch=4, seq_len=8))
    again = list(batches(stream, 3, seed=7, batch=4, seq_len=8))
    other = list(batches(stream, 3, seed=8, batch=4, seq_len=8))
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert first[0].shape == (4, 9)
    assert np.all(np.diff(first[0], axis=1) == 1)  # contiguous windows
    with pytest.raises(ValueError, match="longer than 9"):
        next(batches(stream[:5], 1, seed=0, seq_len=8))


def test_pretraining_reduces_loss_and_is_bit_for_bit_deterministic() -> None:
    cfg, stream = config(), tokens("corpus-a", "bpe-a")
    run = pretrain(cfg, stream, steps=40, lr=3e-3, seed=5)
    again = pretrain(cfg, stream, steps=40, lr=3e-3, seed=5)
    other = pretrain(cfg, stream, steps=40, lr=3e-3, seed=6)
    assert run.last_loss < run.first_loss - 1.0  # from ~ln(512) = 6.2 towards bigram statistics
    assert weights_bytes(run.state) == weights_bytes(again.state)
    assert run.losses == again.losses
    assert weights_bytes(run.state) != weights_bytes(other.state)


def test_pretraining_leaves_the_callers_random_state_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    pretrain(config(), tokens("corpus-a", "bpe-a"), steps=2, lr=1e-3, seed=1)
    assert torch.equal(torch.rand(3), expected)
    assert not torch.are_deterministic_algorithms_enabled()


def test_finetuning_starts_from_the_given_weights() -> None:
    cfg, stream = config(), tokens("corpus-b", "bpe-a")
    base = pretrain(cfg, tokens("corpus-a", "bpe-a"), steps=30, lr=3e-3, seed=1)
    tuned = finetune(base.state, cfg, stream, steps=5, lr=1e-4, seed=2)
    name = "model.layers.0.mlp.up_proj.weight"
    before, after = base.state[name].ravel(), tuned.state[name].ravel()
    assert not np.array_equal(before, after)
    assert np.corrcoef(before, after)[0, 1] > 0.99
    assert tuned.first_loss < base.first_loss - 1.0  # it did not start from scratch


def test_distillation_needs_a_shared_vocabulary() -> None:
    cfg = config()
    other = tiny_config("llama", 640, {}, {})
    with pytest.raises(ValueError, match="share its teacher's vocabulary"):
        distill({}, cfg, other, tokens("corpus-a", "bpe-a"), 1, 1e-3, 0)


def test_distillation_moves_the_student_towards_the_teacher() -> None:
    cfg, stream = config(), tokens("corpus-a", "bpe-a")
    teacher = pretrain(cfg, stream, steps=30, lr=3e-3, seed=1)
    student = distill(teacher.state, cfg, cfg, stream, steps=30, lr=3e-3, seed=2)
    assert student.last_loss < student.first_loss / 2
    assert weights_bytes(student.state) == weights_bytes(
        distill(teacher.state, cfg, cfg, stream, steps=30, lr=3e-3, seed=2).state
    )


def test_lora_merge_changes_each_adapted_matrix_by_a_low_rank_delta() -> None:
    cfg, stream = config(), tokens("corpus-b", "bpe-a")
    base = pretrain(cfg, tokens("corpus-a", "bpe-a"), steps=10, lr=3e-3, seed=1)
    derived, losses = lora_merge(
        base.state, cfg, stream, rank=2, alpha=4.0, steps=15, lr=5e-3, seed=3
    )
    adapted = adapted_tensors(base.state, cfg)
    roles = {e.role for e in resolve_state(base.state, cfg).entries if e.tensor in adapted}
    assert Role.ATTN_Q in roles and Role.MLP_DOWN in roles
    assert len(adapted) == 7 * cfg["num_hidden_layers"]
    for name, array in derived.state.items():
        delta = array.astype(np.float64) - base.state[name]
        if name in adapted:
            assert 0 < np.linalg.matrix_rank(delta, tol=1e-6) <= 2, name
        else:
            assert not delta.any(), name  # embeddings, norms and head stay frozen
    assert derived.transformation == "lora_merge" and derived.params["rank"] == 2
    assert losses[-1] < losses[0]


def test_model_folder_round_trips_and_opens_in_forebear_and_transformers(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    cfg = config("qwen2")
    model = build_model(cfg, seed=9)
    state = state_of(model)
    folder = save_folder(tmp_path / "m", state, cfg, tokenizer("bpe-a"))
    loaded, loaded_config, loaded_tokenizer = load_folder(folder)
    assert loaded_config == cfg and loaded_tokenizer == tokenizer("bpe-a")
    assert all(np.array_equal(loaded[k], v) for k, v in state.items())
    copy = save_folder(tmp_path / "copy", state, cfg, tokenizer("bpe-a"))
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (folder / name).read_bytes() == (copy / name).read_bytes()
    with open_model(folder) as opened:
        assert opened.resolved.family == "qwen2"
        assert opened.vocabulary is not None and opened.vocabulary.size == 512
    hf = AutoModelForCausalLM.from_pretrained(folder)
    hf.train(False)
    ids = torch.tensor([[5, 9, 200, 7]])
    with torch.no_grad():
        expected = model.train(False)(input_ids=ids).logits
        assert torch.allclose(hf(input_ids=ids).logits, expected, atol=1e-6)


def test_broken_model_folders_fail_with_forebear_errors(tmp_path: Path) -> None:
    folder = save_folder(tmp_path / "m", {"w": np.zeros(2, np.float32)}, {}, b"{}")
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CorruptCheckpointError, match="zoo model folder is unreadable"):
        load_folder(folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(InputNotFoundError, match=r"zoo model folder has no tokenizer\.json"):
        load_folder(folder)


def test_memory_reader_sees_the_same_roles_as_the_saved_folder(tmp_path: Path) -> None:
    from forebear.architectures import resolve

    cfg = config("gpt_neox")
    state = state_of(build_model(cfg, seed=1))
    in_memory = {e.key for e in resolve(MemoryReader(state), cfg).entries}
    folder = save_folder(tmp_path / "neox", state, cfg, tokenizer("bpe-a"))
    with open_model(folder) as opened:
        assert {e.key for e in opened.resolved.entries} == in_memory
