"""Tiny checkpoints in several formats, built from numpy alone, for ``forebear demo``.

The models are random and small (hidden 64, two layers) but laid out exactly as
their families ship: a llama with its own byte-level BPE tokenizer saved as one
safetensors file, as sharded safetensors, as a Q8_0 GGUF (with llama.cpp's Q/K
row permutation and its tokenizer metadata) and, when torch is installed, as a
PyTorch ``.bin``; and a GPT-2 with Conv1D weights, a fused ``c_attn`` and a tied head.
Nothing is downloaded.

``build_demo_suspects`` writes models to compare with that llama: a fine-tune
stand-in (its weights plus noise), a disguised copy (MLP units permuted and the
residual stream rotated — the same function — then nudged) and an
independently initialised llama of the same shape. ``write_demo_report`` writes the
evidence report of the demo's main comparison (the disguised copy) in every format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from forebear.compare import Comparison

__all__ = [
    "MAIN_SUSPECT",
    "REFERENCE",
    "REPORT",
    "build_demo_models",
    "build_demo_suspects",
    "write_demo_report",
]

REFERENCE = "llama-safetensors"
MAIN_SUSPECT = "suspect-disguised"  # the comparison the demo's report shows
REPORT = "report"  # written as report.html, report.md and report.json

Array = npt.NDArray[np.float32]

LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 300,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}

GPT2: dict[str, Any] = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "n_embd": 64,
    "n_layer": 2,
    "n_head": 4,
    "n_positions": 128,
    "n_inner": None,
    "vocab_size": 300,
    "tie_word_embeddings": True,
}


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's printable stand-ins for bytes, as byte-level BPE tokenizers store them.
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _tokenizer_json(vocab_size: int) -> dict[str, Any]:
    chars = _bytes_to_unicode()
    tokens = [chars[b] for b in range(256)]
    words = ["the", "model", "weights", "of", "and", "to", "in", "is", "from", "derived"]
    tokens += ["Ġ" + word for word in words]
    tokens += [f"<extra_{i}>" for i in range(vocab_size - 2 - len(tokens))]
    vocab = {token: i for i, token in enumerate(tokens)}
    return {
        "version": "1.0",
        "added_tokens": [
            {"id": len(tokens), "content": "<|begin_of_text|>", "special": True},
            {"id": len(tokens) + 1, "content": "<|end_of_text|>", "special": True},
        ],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
    }


def _llama_weights(rng: np.random.Generator) -> dict[str, Array]:
    c = LLAMA
    hidden, inter, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    head_dim = hidden // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim

    def w(*shape: int) -> Array:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    weights = {"model.embed_tokens.weight": w(vocab, hidden)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        weights |= {
            p + "input_layernorm.weight": np.ones(hidden, np.float32),
            p + "self_attn.q_proj.weight": w(hidden, hidden),
            p + "self_attn.k_proj.weight": w(kv, hidden),
            p + "self_attn.v_proj.weight": w(kv, hidden),
            p + "self_attn.o_proj.weight": w(hidden, hidden),
            p + "post_attention_layernorm.weight": np.ones(hidden, np.float32),
            p + "mlp.gate_proj.weight": w(inter, hidden),
            p + "mlp.up_proj.weight": w(inter, hidden),
            p + "mlp.down_proj.weight": w(hidden, inter),
        }
    weights["model.norm.weight"] = np.ones(hidden, np.float32)
    weights["lm_head.weight"] = w(vocab, hidden)
    return weights


def _gpt2_weights(rng: np.random.Generator) -> dict[str, Array]:
    hidden, vocab = GPT2["n_embd"], GPT2["vocab_size"]

    def w(*shape: int) -> Array:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    weights = {"wte.weight": w(vocab, hidden), "wpe.weight": w(GPT2["n_positions"], hidden)}
    for i in range(GPT2["n_layer"]):
        p = f"h.{i}."
        weights |= {
            p + "ln_1.weight": np.ones(hidden, np.float32),
            p + "ln_1.bias": np.zeros(hidden, np.float32),
            p + "attn.c_attn.weight": w(hidden, 3 * hidden),  # Conv1D: (in, out)
            p + "attn.c_attn.bias": w(3 * hidden),
            p + "attn.c_proj.weight": w(hidden, hidden),
            p + "attn.c_proj.bias": w(hidden),
            p + "ln_2.weight": np.ones(hidden, np.float32),
            p + "ln_2.bias": np.zeros(hidden, np.float32),
            p + "mlp.c_fc.weight": w(hidden, 4 * hidden),
            p + "mlp.c_fc.bias": w(4 * hidden),
            p + "mlp.c_proj.weight": w(4 * hidden, hidden),
            p + "mlp.c_proj.bias": w(hidden),
        }
    weights["ln_f.weight"] = np.ones(hidden, np.float32)
    weights["ln_f.bias"] = np.zeros(hidden, np.float32)
    return weights


def _write_folder(folder: Path, config: dict[str, Any], files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def _sharded(weights: dict[str, Array]) -> dict[str, bytes]:
    from safetensors.numpy import save

    names = list(weights)
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    files: dict[str, bytes] = {}
    weight_map: dict[str, str] = {}
    for i, part in enumerate(halves, start=1):
        shard = f"model-{i:05d}-of-00002.safetensors"
        files[shard] = save({n: weights[n] for n in part}, metadata={"format": "pt"})
        weight_map |= {n: shard for n in part}
    total = sum(int(a.nbytes) for a in weights.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    files["model.safetensors.index.json"] = json.dumps(index, indent=2).encode()
    return files


def _llama_cpp_permute(w: Array, heads: int) -> Array:
    # convert_hf_to_gguf.py stores q/k rows of llama models in interleaved-rope order.
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def _write_gguf(path: Path, weights: dict[str, Array], tokenizer: dict[str, Any]) -> Path:
    import gguf

    c = LLAMA
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("forebear-demo-llama")
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_embedding_length(c["hidden_size"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(c["num_attention_heads"])
    writer.add_head_count_kv(c["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(c["rms_norm_eps"])
    writer.add_tokenizer_model("gpt2")
    by_id = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    by_id |= {t["id"]: t["content"] for t in tokenizer["added_tokens"]}
    writer.add_token_list([by_id[i] for i in range(len(by_id))])
    types = [gguf.TokenType.NORMAL] * len(by_id)
    for token in tokenizer["added_tokens"]:
        types[token["id"]] = gguf.TokenType.CONTROL
    writer.add_token_types(types)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c["num_hidden_layers"])
    for hf_name, array in weights.items():
        stem = hf_name.removesuffix(".weight")
        gguf_name = names.get_name(stem)
        assert gguf_name is not None, hf_name
        if stem.endswith("q_proj"):
            array = _llama_cpp_permute(array, c["num_attention_heads"])
        elif stem.endswith("k_proj"):
            array = _llama_cpp_permute(array, c["num_key_value_heads"])
        if array.ndim == 2:
            quantised = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(
                gguf_name + ".weight", quantised, raw_dtype=gguf.GGMLQuantizationType.Q8_0
            )
        else:
            writer.add_tensor(gguf_name + ".weight", array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _write_bin(folder: Path, weights: dict[str, Array], files: dict[str, bytes]) -> Path | None:
    try:
        import torch
    except ImportError:
        return None
    _write_folder(folder, LLAMA, files)
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, folder / "pytorch_model.bin")
    return folder


def build_demo_models(root: str | Path, *, seed: int = 0) -> list[Path]:
    """Write the demo checkpoints under ``root`` and return their paths, in inspection order."""
    from safetensors.numpy import save

    root = Path(root)
    rng = np.random.default_rng(seed)
    llama = _llama_weights(rng)
    tokenizer = _tokenizer_json(LLAMA["vocab_size"])
    tokenizer_file = {"tokenizer.json": json.dumps(tokenizer).encode()}
    paths = [
        _write_folder(
            root / "llama-safetensors",
            LLAMA,
            {"model.safetensors": save(llama, metadata={"format": "pt"})} | tokenizer_file,
        ),
        _write_folder(root / "llama-sharded", LLAMA, _sharded(llama) | tokenizer_file),
    ]
    root.mkdir(parents=True, exist_ok=True)
    paths.append(_write_gguf(root / "llama-Q8_0.gguf", llama, tokenizer))
    bin_folder = _write_bin(root / "llama-pytorch", llama, tokenizer_file)
    if bin_folder is not None:
        paths.append(bin_folder)
    gpt2 = _gpt2_weights(rng)
    paths.append(
        _write_folder(
            root / "gpt2-safetensors",
            GPT2,
            {"model.safetensors": save(gpt2, metadata={"format": "pt"})},
        )
    )
    return paths


def _disguised(weights: dict[str, Array], rng: np.random.Generator) -> dict[str, Array]:
    """The same function: MLP units permuted per layer, residual stream rotated.

    With unit norm gains, RMSNorm commutes with a rotation ``Q`` of the stream:
    rows that read it become ``W Qᵀ``, matrices that write it ``Q W``, embedding
    rows ``e Qᵀ``.
    """
    c = LLAMA
    hidden = c["hidden_size"]
    rotation, _ = np.linalg.qr(rng.standard_normal((hidden, hidden)))
    reads = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
    out: dict[str, Array] = {}
    for name, w in weights.items():
        if w.ndim == 1:
            out[name] = w.copy()
        elif name.endswith(tuple(f"{r}.weight" for r in reads)) or name in (
            "model.embed_tokens.weight",
            "lm_head.weight",
        ):
            out[name] = (w @ rotation.T).astype(np.float32)
        else:  # o_proj, down_proj write the stream
            out[name] = (rotation @ w).astype(np.float32)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}.mlp."
        order = rng.permutation(c["intermediate_size"])
        out[p + "gate_proj.weight"] = out[p + "gate_proj.weight"][order]
        out[p + "up_proj.weight"] = out[p + "up_proj.weight"][order]
        out[p + "down_proj.weight"] = out[p + "down_proj.weight"][:, order]
    return out


def _nudged(weights: dict[str, Array], rng: np.random.Generator, scale: float) -> dict[str, Array]:
    return {
        name: w
        if w.ndim == 1
        else (w + rng.standard_normal(w.shape) * scale * w.std()).astype(np.float32)
        for name, w in weights.items()
    }


def build_demo_suspects(root: str | Path, *, seed: int = 0) -> dict[str, Path]:
    """Models to compare with ``root / REFERENCE`` (which ``build_demo_models`` wrote)."""
    from safetensors.numpy import save

    root = Path(root)
    llama = _llama_weights(np.random.default_rng(seed))  # the reference's weights again
    rng = np.random.default_rng(seed + 1)
    tokenizer_file = {"tokenizer.json": json.dumps(_tokenizer_json(LLAMA["vocab_size"])).encode()}
    suspects = {
        "suspect-finetuned": _nudged(llama, rng, 0.2),
        "suspect-disguised": _nudged(_disguised(llama, rng), rng, 0.05),
        "suspect-independent": _llama_weights(rng),
    }
    return {
        name: _write_folder(
            root / name,
            LLAMA,
            {"model.safetensors": save(w, metadata={"format": "pt"})} | tokenizer_file,
        )
        for name, w in suspects.items()
    }


def write_demo_report(
    folder: str | Path, result: Comparison, *, command: Sequence[str] | None = None
) -> list[Path]:
    """The report of ``result`` (``folder / REFERENCE`` against ``folder / MAIN_SUSPECT``)
    as ``folder / report.html``, ``.md`` and ``.json``; the paths written, HTML first."""
    from forebear.report import comparison_report, write_report

    folder = Path(folder)
    report = comparison_report(
        result, command=command, inputs=(folder / REFERENCE, folder / MAIN_SUSPECT)
    )
    return [
        write_report(report, folder / f"{REPORT}.{suffix}") for suffix in ("html", "md", "json")
    ]
