"""Architectures as data: definitions validate, detection, and resolution of tiny real models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from factories import (
    FAMILIES,
    HEADS,
    HIDDEN,
    INTERMEDIATE,
    KV_HEADS,
    VOCAB,
    build_torch_model,
    make_hf_model,
    save_hf,
)
from forebear.architectures import Role, definitions, detect, load_definition, resolve
from forebear.architectures.dims import axis_size
from forebear.architectures.resolve import ResolvedModel
from forebear.architectures.roles import Scope
from forebear.architectures.schema import Definition
from forebear.errors import ArchitectureError, DefinitionError, UnknownArchitectureError
from forebear.formats.memory import MemoryReader

BY_FAMILY = {d.family: d for d in definitions()}


class GgufMemoryReader(MemoryReader):
    """A MemoryReader that presents itself as GGUF, so its metadata is used as GGUF KV pairs."""

    def __init__(self, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
        super().__init__(arrays, name="<gguf>", metadata=metadata)
        self._format = "gguf"


def _resolve(
    family: str, *, square: bool = False, with_config: bool = True
) -> tuple[ResolvedModel, dict[str, np.ndarray]]:
    config, state = make_hf_model(family, square=square)
    return resolve(MemoryReader(state, name=family), config if with_config else None), state


def _instances(template: str, definition: Definition) -> list[str]:
    """Concrete names a template stands for (every {base} prefix, layer 3, expert 1)."""
    filled = template.replace("{layer}", "3").replace("{expert}", "1")
    return [filled.replace("{base}", prefix) for prefix in definition.base_prefixes]


# --- definitions -------------------------------------------------------------------------


def test_every_factory_family_has_a_definition() -> None:
    assert set(FAMILIES) <= set(BY_FAMILY)


@pytest.mark.parametrize("family", sorted(BY_FAMILY))
def test_no_name_is_claimed_by_two_templates(family: str) -> None:
    definition = BY_FAMILY[family]
    for naming in ("hf", "gguf"):
        patterns = definition.patterns_for(naming)
        for pattern in patterns:
            for name in _instances(pattern.template, definition):
                claimants = [p.template for p in patterns if p.regex.fullmatch(name)]
                assert claimants == [pattern.template], (name, claimants)


@pytest.mark.parametrize("family", sorted(BY_FAMILY))
def test_placeholders_match_role_scope(family: str) -> None:
    for pattern in BY_FAMILY[family].patterns:
        has_layer = "{layer}" in pattern.template
        has_expert = "{expert}" in pattern.template
        assert has_layer == (pattern.scope is not Scope.MODEL)
        assert has_expert == (pattern.scope is Scope.EXPERT and not pattern.stacked)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = 'family = "tiny"\n[hf]\n"embed.tokens" = "embed.weight"\n'


def test_minimal_definition_loads(tmp_path: Path) -> None:
    definition = load_definition(_write(tmp_path, MINIMAL))
    assert definition.family == "tiny"
    assert [p.parts for p in definition.patterns] == [(Role.EMBED_TOKENS,)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 'blue'\n" + MINIMAL, r"broken\.toml: key 'colour': unknown key"),
        (
            MINIMAL.replace("embed.tokens", "embed.tokenz"),
            r"broken\.toml: key 'hf\.embed\.tokenz': 'embed\.tokenz' is not a role",
        ),
        (
            MINIMAL + '"attn.q" = "layers.q.weight"\n',
            r"key 'hf\.attn\.q': template 'layers\.q\.weight' for a layer-scoped role "
            r"needs \{layer\}",
        ),
        (
            MINIMAL + '"final_norm" = "layers.{layer}.norm"\n',
            r"for a model-scoped role needs no \{layer\}/\{expert\}",
        ),
        (MINIMAL + '"attn.q" = "layers.{block}.q"\n', r"unknown placeholder \{block\}"),
        (
            MINIMAL + '"attn.q" = { name = "l.{layer}.q", transpose = true }\n',
            r"key 'hf\.attn\.q\.transpose': unknown key",
        ),
        (
            MINIMAL + '"lm_head" = "embed.weight"\n',
            r"template 'embed\.weight' is already claimed by embed\.tokens",
        ),
        (
            MINIMAL + "[dims.hf]\nwidth = 'hidden_size'\n",
            r"key 'dims\.hf\.width': unknown dimension",
        ),
        (
            MINIMAL + "[[hf_fused]]\nname = 'l.{layer}.qkv'\nparts = ['attn.q', 'mlp.up']\n"
            "axis = 'depth'\n",
            r"hf_fused\[0\]\.axis",
        ),
        ("family = [", r"broken\.toml: cannot be read as TOML"),
    ],
)
def test_bad_definition_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        load_definition(_write(tmp_path, text))


def test_definition_error_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError) as caught:
        load_definition(_write(tmp_path, "colour = 1\n" + MINIMAL))
    assert caught.value.path is not None and caught.value.path.endswith("broken.toml")
    assert "docs/adding-an-architecture.md" in str(caught.value)


# --- detection ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_detect_from_config_alone(family: str) -> None:
    config, _ = make_hf_model(family)
    assert detect([], config).family == family


@pytest.mark.parametrize("family", FAMILIES)
def test_detect_from_tensor_names_alone(family: str) -> None:
    _, state = make_hf_model(family)
    found = detect(list(state)).family
    # Mistral and Gemma 1 save exactly llama's tensor names: names alone cannot tell them apart.
    same_names = {p.template for p in BY_FAMILY[found].patterns_for("hf")} == {
        p.template for p in BY_FAMILY[family].patterns_for("hf")
    }
    assert found == family or (same_names and found == "llama"), found


def test_detect_prefers_names_among_definitions_sharing_a_gguf_label() -> None:
    names = ["token_embd.weight", "output_norm.weight"] + [
        f"blk.0.{t}.weight"
        for t in (
            "attn_kv_a_mqa",
            "attn_kv_a_norm",
            "attn_kv_b",
            "attn_q",
            "attn_norm",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        )
    ]
    meta = {"general.architecture": "deepseek2"}
    assert detect(names, None, meta).family == "deepseek_v2"
    moe = [
        f"blk.0.{t}"
        for t in (
            "ffn_gate_inp.weight",
            "exp_probs_b.bias",
            "ffn_gate_exps.weight",
            "ffn_up_exps.weight",
            "ffn_down_exps.weight",
            "ffn_gate_shexp.weight",
            "ffn_up_shexp.weight",
            "ffn_down_shexp.weight",
        )
    ]
    dense = [
        n for n in names if not n.startswith(("blk.0.ffn_gate", "blk.0.ffn_up", "blk.0.ffn_down"))
    ]
    assert detect(dense + moe, None, meta).family == "deepseek_v3"


def test_unknown_layout_lists_what_was_found() -> None:
    names = ["encoder.blocks.0.wq", "encoder.blocks.0.wk", "head.proj"]
    with pytest.raises(UnknownArchitectureError) as caught:
        detect(names, {"model_type": "mystery", "architectures": ["MysteryForCausalLM"]})
    message = str(caught.value)
    assert "model_type='mystery'" in message
    assert "architectures=['MysteryForCausalLM']" in message
    assert "encoder.blocks.0.wq" in message
    assert message.endswith("add a definition file as described in docs/adding-an-architecture.md")


def test_unknown_gguf_architecture_is_named() -> None:
    with pytest.raises(
        UnknownArchitectureError, match=r"general\.architecture='rwkv7'; tensors: none"
    ):
        detect([], None, {"general.architecture": "rwkv7"})


def test_unknown_model_type_falls_back_to_tensor_names() -> None:
    config, state = make_hf_model("qwen3")
    assert detect(list(state), {**config, "model_type": "my-finetune"}).family == "qwen3"


# --- resolution --------------------------------------------------------------------------


@pytest.mark.parametrize("square", [False, True], ids=["rect", "square"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_tensor_resolves_with_declared_shape(family: str, square: bool) -> None:
    model, state = _resolve(family, square=square)
    coverage = model.coverage
    assert model.family == family
    assert model.source_format == "hf"
    assert coverage.unknown == () and coverage.duplicates == () and coverage.mismatches == ()
    assert dict(coverage.missing) == {}
    assert coverage.complete
    assert {entry.tensor for entry in model.entries} == set(state)
    for entry in model.entries:
        expected = tuple(axis_size(axis, model.dims) for axis in entry.role.axes)
        assert model.read(entry.role, entry.layer, entry.expert).shape == expected, entry


@pytest.mark.parametrize("square", [False, True], ids=["rect", "square"])
@pytest.mark.parametrize("family", FAMILIES)
def test_dims_and_canonical_orientation(family: str, square: bool) -> None:
    model, _ = _resolve(family, square=square)
    dims = model.dims
    inter = HIDDEN if square else INTERMEDIATE
    assert (dims.hidden, dims.vocab, dims.layers, dims.heads) == (HIDDEN, VOCAB, 2, HEADS)
    assert model.read(Role.EMBED_TOKENS).shape == (VOCAB, HIDDEN)
    last = model.dims.layers - 1
    q_role = Role.ATTN_Q_B if family.startswith("deepseek") else Role.ATTN_Q
    head_dim = 24 if family.startswith("deepseek") else 16
    assert model.read(q_role, last).shape[0] == HEADS * head_dim
    if family not in ("gpt2", "gpt_neox", "bert") and not family.startswith("deepseek"):
        assert model.read(Role.ATTN_K, last).shape == (KV_HEADS * head_dim, HIDDEN)
    if model.has(Role.MLP_DOWN, 0):
        assert model.read(Role.MLP_DOWN, 0).shape == (HIDDEN, inter)
        assert model.read(Role.MLP_UP, 0).shape == (inter, HIDDEN)


def test_square_model_keeps_up_and_down_apart() -> None:
    model, state = _resolve("llama", square=True)
    np.testing.assert_array_equal(
        model.read(Role.MLP_UP, 1), state["model.layers.1.mlp.up_proj.weight"]
    )
    np.testing.assert_array_equal(
        model.read(Role.MLP_DOWN, 1), state["model.layers.1.mlp.down_proj.weight"]
    )
    gpt2, gstate = _resolve("gpt2", square=True)
    np.testing.assert_array_equal(
        gpt2.read(Role.MLP_DOWN, 1), gstate["transformer.h.1.mlp.c_proj.weight"].T
    )
    np.testing.assert_array_equal(
        gpt2.read(Role.MLP_UP, 1), gstate["transformer.h.1.mlp.c_fc.weight"].T
    )


def _torch_linear(
    model: ResolvedModel, weight: Role, bias: Role, x: np.ndarray, layer: int
) -> np.ndarray:
    return x @ model.read(weight, layer).T + model.read(bias, layer)


def test_gpt2_fused_split_reproduces_torch_qkv() -> None:
    import torch

    model, _ = _resolve("gpt2")
    attn = build_torch_model("gpt2").transformer.h[1].attn
    x = np.random.default_rng(0).standard_normal((5, HIDDEN)).astype(np.float32)
    with torch.no_grad():
        q, k, v = attn.c_attn(torch.from_numpy(x)).split(HIDDEN, dim=-1)
    for role, bias, expected in (
        (Role.ATTN_Q, Role.ATTN_Q_BIAS, q),
        (Role.ATTN_K, Role.ATTN_K_BIAS, k),
        (Role.ATTN_V, Role.ATTN_V_BIAS, v),
    ):
        np.testing.assert_allclose(
            _torch_linear(model, role, bias, x, 1), expected.numpy(), rtol=1e-5, atol=1e-5
        )
    with torch.no_grad():
        out = attn.c_proj(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(
        _torch_linear(model, Role.ATTN_O, Role.ATTN_O_BIAS, x, 1), out, rtol=1e-5, atol=1e-5
    )


def test_gpt_neox_interleaved_split_reproduces_torch_qkv() -> None:
    import torch

    model, _ = _resolve("gpt_neox")
    attn = build_torch_model("gpt_neox").gpt_neox.layers[0].attention
    head = HIDDEN // HEADS
    x = np.random.default_rng(1).standard_normal((5, HIDDEN)).astype(np.float32)
    with torch.no_grad():
        qkv = attn.query_key_value(torch.from_numpy(x)).view(5, HEADS, 3 * head)
        q, k, v = (t.reshape(5, HIDDEN).numpy() for t in qkv.chunk(3, dim=-1))
    for role, bias, expected in (
        (Role.ATTN_Q, Role.ATTN_Q_BIAS, q),
        (Role.ATTN_K, Role.ATTN_K_BIAS, k),
        (Role.ATTN_V, Role.ATTN_V_BIAS, v),
    ):
        np.testing.assert_allclose(
            _torch_linear(model, role, bias, x, 0), expected, rtol=1e-5, atol=1e-5
        )


def test_phi3_fused_slices() -> None:
    model, state = _resolve("phi3")
    qkv = state["model.layers.1.self_attn.qkv_proj.weight"]
    q_rows, kv_rows = HEADS * 16, KV_HEADS * 16
    np.testing.assert_array_equal(model.read(Role.ATTN_Q, 1), qkv[:q_rows])
    np.testing.assert_array_equal(model.read(Role.ATTN_K, 1), qkv[q_rows : q_rows + kv_rows])
    np.testing.assert_array_equal(model.read(Role.ATTN_V, 1), qkv[q_rows + kv_rows :])
    gate_up = state["model.layers.1.mlp.gate_up_proj.weight"]
    np.testing.assert_array_equal(model.read(Role.MLP_GATE, 1), gate_up[:INTERMEDIATE])
    np.testing.assert_array_equal(model.read(Role.MLP_UP, 1), gate_up[INTERMEDIATE:])


def test_mla_dims_from_config_keys() -> None:
    model, _state = _resolve("deepseek_v3")
    dims = model.dims
    assert (dims.head_dim, dims.v_head_dim, dims.rope_head_dim) == (24, 16, 8)
    assert (dims.q_lora_rank, dims.kv_lora_rank, dims.shared_intermediate) == (24, 16, 32)
    assert model.read(Role.ATTN_KV_A, 1).shape == (16 + 8, HIDDEN)
    assert model.read(Role.ATTN_KV_B, 1).shape == (HEADS * (16 + 16), 16)
    assert model.read(Role.ATTN_O, 1).shape == (HIDDEN, HEADS * 16)
    # Layer 0 is dense (first_k_dense_replace = 1), layer 1 routes over experts.
    assert model.has(Role.MLP_DOWN, 0) and not model.has(Role.MOE_ROUTER, 0)
    assert model.has(Role.MOE_ROUTER_BIAS, 1) and not model.has(Role.MLP_DOWN, 1)
    assert model.coverage.found["moe.expert.gate"] == 4


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3"])
def test_transformers5_in_memory_expert_layout_matches_saved_layout(family: str) -> None:
    config, saved = make_hf_model(family)
    fused = {k: v.detach().numpy() for k, v in build_torch_model(family).state_dict().items()}
    assert any(name.endswith("mlp.experts.gate_up_proj") for name in fused)
    in_memory = resolve(MemoryReader(fused), config)
    on_disk = resolve(MemoryReader(saved), config)
    assert in_memory.coverage.complete and in_memory.coverage.unknown == ()
    for role in (Role.MOE_EXPERT_GATE, Role.MOE_EXPERT_UP, Role.MOE_EXPERT_DOWN):
        for expert in range(4):
            np.testing.assert_array_equal(
                in_memory.read(role, 1, expert), on_disk.read(role, 1, expert)
            )


def _gguf_llama_moe() -> tuple[GgufMemoryReader, dict[str, np.ndarray]]:
    _config, state = make_hf_model("mixtral")
    moe = "model.layers.{}.block_sparse_moe"
    arrays = {
        "token_embd.weight": state["model.embed_tokens.weight"],
        "output_norm.weight": state["model.norm.weight"],
    }
    for layer in range(2):
        hf = f"model.layers.{layer}"
        arrays.update(
            {
                f"blk.{layer}.attn_norm.weight": state[f"{hf}.input_layernorm.weight"],
                f"blk.{layer}.ffn_norm.weight": state[f"{hf}.post_attention_layernorm.weight"],
                f"blk.{layer}.ffn_gate_inp.weight": state[f"{moe.format(layer)}.gate.weight"],
            }
        )
        for ours, theirs in (
            ("attn_q", "q_proj"),
            ("attn_k", "k_proj"),
            ("attn_v", "v_proj"),
            ("attn_output", "o_proj"),
        ):
            arrays[f"blk.{layer}.{ours}.weight"] = state[f"{hf}.self_attn.{theirs}.weight"]
        for ours, theirs in (
            ("ffn_gate_exps", "w1"),
            ("ffn_up_exps", "w3"),
            ("ffn_down_exps", "w2"),
        ):
            arrays[f"blk.{layer}.{ours}.weight"] = np.stack(
                [state[f"{moe.format(layer)}.experts.{e}.{theirs}.weight"] for e in range(4)]
            )
    meta = {
        "general.architecture": "llama",
        "llama.embedding_length": HIDDEN,
        "llama.block_count": 2,
        "llama.attention.head_count": HEADS,
        "llama.attention.head_count_kv": KV_HEADS,
        "llama.feed_forward_length": INTERMEDIATE,
        "llama.expert_count": 4,
        "llama.expert_used_count": 2,
    }
    return GgufMemoryReader(arrays, meta), state


def test_gguf_stacked_experts_and_tied_head() -> None:
    reader, state = _gguf_llama_moe()
    model = resolve(reader)
    assert (model.family, model.source_format) == ("llama", "gguf")
    assert (model.dims.hidden, model.dims.heads, model.dims.kv_heads, model.dims.experts) == (
        HIDDEN,
        HEADS,
        KV_HEADS,
        4,
    )
    assert (
        model.coverage.complete and model.tied_head
    )  # no output.weight: llama.cpp reuses token_embd
    np.testing.assert_array_equal(
        model.read(Role.MOE_EXPERT_GATE, 1, 2),
        state["model.layers.1.block_sparse_moe.experts.2.w1.weight"],
    )
    np.testing.assert_array_equal(
        model.read(Role.MOE_EXPERT_DOWN, 0, 3),
        state["model.layers.0.block_sparse_moe.experts.3.w2.weight"],
    )
    np.testing.assert_array_equal(model.read(Role.LM_HEAD), state["model.embed_tokens.weight"])


@pytest.mark.parametrize(
    ("family", "tied"),
    [("gpt2", True), ("gemma", True), ("gemma3", True), ("llama", False), ("gpt_neox", False)],
)
def test_tied_and_untied_heads(family: str, tied: bool) -> None:
    model, _state = _resolve(family)
    assert model.tied_head is tied
    assert model.has(Role.LM_HEAD) is not tied
    if tied:
        np.testing.assert_array_equal(model.read(Role.LM_HEAD), model.read(Role.EMBED_TOKENS))


def test_head_absent_follows_tie_word_embeddings() -> None:
    config, state = make_hf_model("llama")
    del state["lm_head.weight"]
    tied = resolve(MemoryReader(state), {**config, "tie_word_embeddings": True})
    assert tied.tied_head and tied.coverage.complete
    untied = resolve(MemoryReader(state), config)  # config says not tied, yet the head is gone
    assert not untied.tied_head
    assert untied.coverage.missing == {None: ("lm_head",)}
    with pytest.raises(
        ArchitectureError, match=r"no lm_head for layer=None expert=None in this llama checkpoint"
    ):
        untied.read(Role.LM_HEAD)


def test_missing_layer_role_is_reported() -> None:
    config, state = make_hf_model("qwen2_moe")
    del state["model.layers.1.mlp.experts.2.up_proj.weight"]
    del state["model.layers.0.self_attn.k_proj.bias"]
    coverage = resolve(MemoryReader(state), config).coverage
    assert dict(coverage.missing) == {0: ("attn.k_bias",), 1: ("moe.expert.up[2]",)}
    assert not coverage.complete


def test_unknown_and_ignored_tensors_are_listed() -> None:
    config, state = make_hf_model("llama")
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(8, dtype=np.float32)
    state["model.layers.0.self_attn.q_proj.weight_scale"] = np.ones(1, dtype=np.float32)
    coverage = resolve(MemoryReader(state), config).coverage
    assert coverage.ignored == ("model.layers.0.self_attn.rotary_emb.inv_freq",)
    assert coverage.unknown == ("model.layers.0.self_attn.q_proj.weight_scale",)


def test_shape_contradicting_config_is_a_mismatch() -> None:
    config, state = make_hf_model("llama")
    model = resolve(MemoryReader(state), {**config, "num_key_value_heads": 4})
    assert any(
        re.match(r"model\.layers\.0\.self_attn\.k_proj\.weight: attn\.k has shape \(32, 64\)", m)
        for m in model.coverage.mismatches
    )


def test_gemma3_multimodal_text_part() -> None:
    model, state = _resolve("gemma3_multimodal")
    assert model.family == "gemma3"
    assert model.coverage.complete and model.tied_head
    assert model.dims.hidden == HIDDEN and model.dims.head_dim == 16  # read from text_config
    assert model.coverage.ignored and all(
        n.startswith(("vision_tower.", "multi_modal_projector.")) for n in model.coverage.ignored
    )
    np.testing.assert_array_equal(
        model.read(Role.ATTN_Q_NORM, 1),
        state["language_model.model.layers.1.self_attn.q_norm.weight"],
    )


def test_bert_with_prefix_and_mlm_head() -> None:
    model, state = _resolve("bert_mlm")
    assert model.family == "bert" and model.coverage.complete and model.tied_head
    np.testing.assert_array_equal(model.read(Role.LM_HEAD_BIAS), state["cls.predictions.bias"])
    np.testing.assert_array_equal(
        model.read(Role.ATTN_POST_NORM_BIAS, 0),
        state["bert.encoder.layer.0.attention.output.LayerNorm.bias"],
    )
    assert model.read(Role.EMBED_TOKEN_TYPES).shape == (2, HIDDEN)


def test_resolve_without_config_reads_dims_from_shapes() -> None:
    model, _ = _resolve("qwen3", with_config=False)
    dims = model.dims
    assert (dims.hidden, dims.intermediate, dims.vocab, dims.layers) == (
        HIDDEN,
        INTERMEDIATE,
        VOCAB,
        2,
    )
    # head_dim comes from the q_norm vector, heads then from q's rows: no factoring by guess.
    assert (dims.head_dim, dims.heads) == (16, HEADS)
    llama, _ = _resolve("llama", with_config=False)
    assert llama.dims.heads is None and llama.coverage.mismatches == ()


# --- the factory itself ------------------------------------------------------------------


def test_factory_is_deterministic_per_seed_and_square_is_square() -> None:
    config, first = make_hf_model("llama", seed=0)
    _, again = make_hf_model("llama", seed=0)
    _, other = make_hf_model("llama", seed=1)
    name = "model.layers.0.mlp.down_proj.weight"
    np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first[name], other[name])
    assert (config["hidden_size"], config["intermediate_size"]) == (HIDDEN, INTERMEDIATE)
    square, _ = make_hf_model("llama", square=True)
    assert square["intermediate_size"] == square["hidden_size"] == HIDDEN


@pytest.mark.parametrize(
    ("format", "files"),
    [
        ("safetensors", {"model.safetensors"}),
        ("bin", {"pytorch_model.bin"}),
    ],
)
def test_save_hf_writes_config_and_weights(tmp_path: Path, format: str, files: set[str]) -> None:
    import torch

    folder = save_hf(tmp_path, "gpt2", format)
    names = {p.name for p in folder.iterdir()}
    assert files | {"config.json"} <= names
    _, state = make_hf_model("gpt2")
    if format == "bin":
        loaded = torch.load(folder / "pytorch_model.bin", weights_only=True)
        assert set(loaded) == set(state)


def test_save_hf_sharded_writes_an_index(tmp_path: Path) -> None:
    folder = save_hf(tmp_path, "qwen2", "sharded")
    index = json.loads((folder / "model.safetensors.index.json").read_text(encoding="utf-8"))
    _, state = make_hf_model("qwen2")
    assert set(index["weight_map"]) == set(state)
    assert len(set(index["weight_map"].values())) > 1


def test_hostile_names_and_shapes_stay_bounded() -> None:
    config, state = make_hf_model("qwen3_moe")
    state["model.layers.1.mlp.experts.gate_up_proj"] = np.zeros((1 << 20, 0, 1), np.float32)
    state["model.layers.99999999.input_layernorm.weight"] = np.ones(HIDDEN, np.float32)
    state["model.layers." + "9" * 5000 + ".input_layernorm.weight"] = np.ones(1, np.float32)
    model = resolve(
        MemoryReader(state), {k: v for k, v in config.items() if k != "num_hidden_layers"}
    )
    coverage = model.coverage
    assert any("is not plausible" in m for m in coverage.mismatches)
    assert coverage.unknown == ("model.layers." + "9" * 5000 + ".input_layernorm.weight",)
    assert len(coverage.missing) <= 4096 + 1


def test_numpy_integers_in_gguf_metadata_are_dims() -> None:
    reader, _ = _gguf_llama_moe()
    meta = {k: np.uint32(v) if isinstance(v, int) else v for k, v in reader.metadata.items()}
    model = resolve(GgufMemoryReader({n: reader.read(n) for n in reader.tensors()}, meta))
    assert (model.dims.hidden, model.dims.experts) == (HIDDEN, 4)


def test_the_guide_example_is_a_valid_definition(tmp_path: Path) -> None:
    guide = Path(__file__).parent.parent / "docs" / "adding-an-architecture.md"
    example = guide.read_text(encoding="utf-8").split("```toml\n", 1)[1].split("```", 1)[0]
    definition = load_definition(_write(tmp_path, example))
    assert definition.family == "myfamily"
    fused = [p for p in definition.patterns if p.fused and p.naming == "hf"]
    assert [p.parts for p in fused] == [(Role.ATTN_Q, Role.ATTN_K, Role.ATTN_V)]


def test_second_tensor_for_one_role_is_a_duplicate() -> None:
    config, state = make_hf_model("bert_mlm")
    state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"].copy()
    coverage = resolve(MemoryReader(state), config).coverage
    assert coverage.duplicates == ("cls.predictions.decoder.bias",)
    assert coverage.complete


def test_gguf_one_row_router_reads_as_declared() -> None:
    from forebear.architectures.resolve import Entry, entry_shape

    entry = Entry(Role.MOE_SHARED_ROUTER, 0, None, "blk.0.ffn_gate_inp_shexp.weight")
    assert entry_shape(entry, (HIDDEN,)) == (1, HIDDEN)
    assert entry_shape(entry, (1, HIDDEN)) == (1, HIDDEN)
