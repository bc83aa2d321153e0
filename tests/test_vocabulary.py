"""Tokenizer vocabularies: normalised forms against the tokenizers' own decoding, alignment
across families, GGUF and SentencePiece-protobuf forms, and hostile files.

Every tokenizer is trained here on a few sentences with the ``tokenizers`` library.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from forebear.architectures.vocabulary import (
    Vocabulary,
    load_vocabulary,
    shared_tokens,
    vocabulary_from_gguf,
    vocabulary_from_sentencepiece_model,
    vocabulary_from_tokenizer_json,
    vocabulary_from_vocab_json,
    vocabulary_from_vocab_txt,
)
from forebear.errors import TokenizerError
from forebear.sources import LocalDirectory

CORPUS = [
    "the cat sat on the mat",
    "the dog ate the bone and the cat watched",
    "a cat and a dog met on the road to the sea",
    "the end of the story is near the sea",
    "storytellers tell the story of the cat",
] * 20
TEXT = "the cat sat on the mat near the sea"
CONTROL, BYTE, NORMAL, UNKNOWN, USER_DEFINED = 3, 6, 1, 2, 4


def _json(tokenizer: Tokenizer) -> bytes:
    return tokenizer.to_str().encode("utf-8")


def _surface(vocabulary: Vocabulary, ids: list[int]) -> bytes:
    forms = [vocabulary.normalized[i] for i in ids]
    assert all(isinstance(form, bytes) for form in forms)
    return b"".join(form for form in forms if isinstance(form, bytes))


@pytest.fixture(scope="module")
def byte_bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.add_tokens(["<|café|>"])  # a non-special added token: literal text
    return tokenizer


@pytest.fixture(scope="module")
def llama_bpe() -> Tokenizer:
    """Llama-2 layout: <unk> <s> </s>, then 256 byte-fallback pieces, then merged pieces."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    document = json.loads(tokenizer.to_str())
    trained = sorted(document["model"]["vocab"].items(), key=lambda item: item[1])
    pieces = [p for p, _ in trained[:3]] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [p for p, _ in trained[3:]]
    document["model"]["vocab"] = {piece: ident for ident, piece in enumerate(pieces)}
    document["model"]["byte_fallback"] = True
    document["decoder"] = {
        "type": "Sequence",
        "decoders": [{"type": "ByteFallback"}, {"type": "Metaspace", "replacement": "▁"}],
    }
    return Tokenizer.from_str(json.dumps(document))


@pytest.fixture(scope="module")
def wordpiece() -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=90,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


@pytest.fixture(scope="module")
def unigram() -> Tokenizer:
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=60, special_tokens=["<unk>"], unk_token="<unk>", show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


# ---------------------------------------------------------------- surface text


def test_byte_level_bpe_forms_are_the_decoded_bytes(byte_bpe: Tokenizer) -> None:
    vocabulary = vocabulary_from_tokenizer_json(_json(byte_bpe), "tokenizer.json")
    assert vocabulary.kind == "byte_bpe"
    assert len(vocabulary) == vocabulary.size == byte_bpe.get_vocab_size()
    for text in (TEXT, "naïve café ☕ over the sea\n"):
        ids = byte_bpe.encode(text).ids
        assert _surface(vocabulary, ids) == text.encode("utf-8")
    checked = 0
    for ident, form in enumerate(vocabulary.normalized):
        if isinstance(form, bytes) and form.isascii():
            assert form.decode("ascii") == byte_bpe.decode([ident]), vocabulary.tokens[ident]
            checked += 1
    assert checked > 150
    the = vocabulary.id_of(b" the")
    assert the is not None and vocabulary.tokens[the] == "Ġthe"
    assert vocabulary.normalized[vocabulary.tokens.index("Ċ")] == b"\n"


def test_byte_level_special_and_added_tokens(byte_bpe: Tokenizer) -> None:
    vocabulary = vocabulary_from_tokenizer_json(_json(byte_bpe), "tokenizer.json")
    eot = byte_bpe.token_to_id("<|endoftext|>")
    user = byte_bpe.token_to_id("<|café|>")
    assert vocabulary.normalized[eot] == "<|endoftext|>" and eot in vocabulary.special
    assert vocabulary.normalized[user] == "<|café|>".encode() and user not in vocabulary.special
    assert vocabulary.id_of("<|endoftext|>") == eot
    assert vocabulary.id_of(b"<|endoftext|>") is None


def test_sentencepiece_bpe_with_byte_fallback(llama_bpe: Tokenizer) -> None:
    vocabulary = vocabulary_from_tokenizer_json(_json(llama_bpe), "tokenizer.json")
    assert vocabulary.kind == "sentencepiece_bpe"
    encoding = llama_bpe.encode(TEXT)
    assert _surface(vocabulary, encoding.ids) == b" " + TEXT.encode()
    foreign = "the ☕ sea"
    ids = llama_bpe.encode(foreign).ids
    assert llama_bpe.token_to_id("<0xE2>") in ids
    assert _surface(vocabulary, ids) == b" " + foreign.encode()
    assert llama_bpe.decode(ids) == foreign
    assert vocabulary.normalized[llama_bpe.token_to_id("<0x0A>")] == b"\n"
    assert len(vocabulary.byte_tokens) == 256
    # "t" is both <0x74> (id 119) and a learned piece: the learned piece wins.
    assert vocabulary.id_of(b"t") == llama_bpe.token_to_id("t")
    assert {vocabulary.normalized[i] for i in range(3)} == {"<unk>", "<s>", "</s>"}


def test_sentencepiece_bpe_recognised_by_its_normalizer() -> None:
    """Llama-2's later tokenizer.json: no Metaspace, a Replace(" " → "▁") normalizer instead."""
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
    document = {
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend"}, replace]},
        "model": {"type": "BPE", "vocab": {"▁the": 0, "the": 1}, "merges": []},
    }
    vocabulary = vocabulary_from_tokenizer_json(json.dumps(document).encode(), "t")
    assert vocabulary.kind == "sentencepiece_bpe"
    assert vocabulary.normalized == (b" the", b"the")
    del document["normalizer"]
    vocabulary = vocabulary_from_tokenizer_json(json.dumps(document).encode(), "t")
    assert vocabulary.kind == "bpe" and vocabulary.normalized == ("▁the".encode(), b"the")


def test_wordpiece_tokenizer_json_and_vocab_txt_agree(wordpiece: Tokenizer, tmp_path: Path) -> None:
    from_json = vocabulary_from_tokenizer_json(_json(wordpiece), "tokenizer.json")
    wordpiece.model.save(str(tmp_path))
    from_txt = vocabulary_from_vocab_txt((tmp_path / "vocab.txt").read_bytes(), "vocab.txt")
    assert from_json.kind == from_txt.kind == "wordpiece"
    assert from_json.normalized == from_txt.normalized
    assert from_json.special == from_txt.special == frozenset(range(5))
    assert from_json.normalized[2] == "[CLS]"
    for text in (TEXT, "tellers tell the story of cats"):
        ids = wordpiece.encode(text).ids
        assert _surface(from_json, ids) == b" " + text.encode()
    pieces = [from_json.tokens[i] for i in wordpiece.encode("tellers").ids]
    assert len(pieces) > 1 and all(piece.startswith("##") for piece in pieces[1:])


def test_unigram_forms(unigram: Tokenizer) -> None:
    vocabulary = vocabulary_from_tokenizer_json(_json(unigram), "tokenizer.json")
    assert vocabulary.kind == "unigram"
    ids = unigram.encode(TEXT).ids
    assert _surface(vocabulary, ids) == b" " + TEXT.encode()
    assert unigram.decode(ids) == TEXT
    assert vocabulary.normalized[unigram.token_to_id("<unk>")] == "<unk>"


def test_shared_tokens_align_byte_level_and_sentencepiece(
    byte_bpe: Tokenizer, llama_bpe: Tokenizer
) -> None:
    a = vocabulary_from_tokenizer_json(_json(byte_bpe), "a/tokenizer.json")
    b = vocabulary_from_tokenizer_json(_json(llama_bpe), "b/tokenizer.json")
    pairs = shared_tokens(a, b)
    assert (byte_bpe.token_to_id("Ġthe"), llama_bpe.token_to_id("▁the")) in pairs
    assert (byte_bpe.token_to_id("Ċ"), llama_bpe.token_to_id("<0x0A>")) in pairs
    assert [i for i, _ in pairs] == sorted({i for i, _ in pairs})
    assert len({j for _, j in pairs}) == len(pairs)
    assert all(a.normalized[i] == b.normalized[j] for i, j in pairs)
    assert len(pairs) > 256  # every byte, plus whole words


@given(st.text(min_size=1, max_size=40))
def test_byte_level_characters_round_trip_to_utf8(text: str) -> None:
    """The tokenizers library's own byte-to-character mapping is the oracle."""
    split = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    mapped = "".join(piece for piece, _ in split.pre_tokenize_str(text))
    vocabulary = vocabulary_from_vocab_json(json.dumps({mapped: 0}).encode(), "vocab.json")
    assert vocabulary.normalized == (text.encode("utf-8"),)


# ---------------------------------------------------------------- GGUF


def _gguf_tokens(tokenizer: Tokenizer, model: str) -> dict[str, Any]:
    """What llama.cpp's convert_hf_to_gguf writes for this tokenizer."""
    added = tokenizer.get_added_tokens_decoder()
    tokens, types = [], []
    for ident in range(tokenizer.get_vocab_size()):
        token = tokenizer.id_to_token(ident)
        assert token is not None
        kind = NORMAL
        if ident in added:
            kind = CONTROL if added[ident].special else USER_DEFINED
        elif re.fullmatch(r"<0x[0-9A-F]{2}>", token):
            kind = BYTE
        if model == "bert" and not token.startswith("["):
            token = token[2:] if token.startswith("##") else "▁" + token
        tokens.append(token)
        types.append(kind)
    return {
        "tokenizer.ggml.model": model,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
    }


@pytest.mark.parametrize(
    ("fixture", "model"), [("byte_bpe", "gpt2"), ("llama_bpe", "llama"), ("wordpiece", "bert")]
)
def test_gguf_metadata_matches_tokenizer_json(
    fixture: str, model: str, request: pytest.FixtureRequest
) -> None:
    tokenizer: Tokenizer = request.getfixturevalue(fixture)
    expected = vocabulary_from_tokenizer_json(_json(tokenizer), "tokenizer.json")
    vocabulary = vocabulary_from_gguf(_gguf_tokens(tokenizer, model), "model.gguf")
    assert vocabulary is not None
    assert vocabulary.kind == f"gguf-{model}"
    assert vocabulary.normalized == expected.normalized
    assert vocabulary.special == expected.special
    assert vocabulary.byte_tokens == expected.byte_tokens


def test_gguf_stray_bytes_come_back_as_bytes() -> None:
    """forebear's GGUF reader keeps undecodable token bytes as surrogate escapes."""
    tokens = ["<s>", "▁a\udcff", "b\ud800"]
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens}
    vocabulary = vocabulary_from_gguf({**meta, "tokenizer.ggml.token_type": [3, 1, 1]}, "m.gguf")
    assert vocabulary is not None
    assert vocabulary.normalized == ("<s>", b" a\xff", b"b\xed\xa0\x80")


def test_gguf_without_vocabulary_is_none() -> None:
    assert vocabulary_from_gguf({"general.architecture": "llama"}, "m.gguf") is None
    assert vocabulary_from_gguf({"tokenizer.ggml.model": "none"}, "m.gguf") is None


# ---------------------------------------------------------------- SentencePiece protobuf


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int, wire: int = 2) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 0 and isinstance(payload, int):
        return key + _varint(payload)
    assert isinstance(payload, bytes)
    return key + (_varint(len(payload)) + payload if wire == 2 else payload)


def _piece(text: str, score: float, kind: int | None) -> bytes:
    body = _field(1, text.encode()) + _field(2, struct.pack("<f", score), wire=5)
    return body + (b"" if kind is None else _field(3, kind, wire=0))


def _sentencepiece_model() -> bytes:
    pieces: list[tuple[str, float, int | None]] = [("<unk>", 0.0, UNKNOWN), ("<s>", 0.0, CONTROL)]
    pieces += [("</s>", 0.0, CONTROL)]
    pieces += [("<0x0A>", 0.0, BYTE), ("▁the", -1.0, None), ("ing", -2.0, NORMAL)]
    pieces += [("<tool>", 0.0, USER_DEFINED), ("▁cat", -3.0, NORMAL)]
    trainer_spec = _field(3, 2, wire=0) + _field(4, 8, wire=0)  # model_type BPE, vocab_size
    data = b"".join(_field(1, _piece(*piece)) for piece in pieces)
    # normalizer_spec and an unknown fixed64 field must be skipped.
    return data + _field(2, trainer_spec) + _field(3, b"\x0a\x04nmt!") + _field(99, b"\0" * 8, 1)


def test_sentencepiece_model_protobuf() -> None:
    vocabulary = vocabulary_from_sentencepiece_model(_sentencepiece_model(), "tokenizer.model")
    assert vocabulary.kind == "sentencepiece_bpe"
    assert vocabulary.tokens[4] == "▁the"
    assert vocabulary.normalized == (
        *("<unk>", "<s>", "</s>"),
        *(b"\n", b" the", b"ing", b"<tool>", b" cat"),
    )
    assert vocabulary.special == {0, 1, 2} and vocabulary.byte_tokens == {3}


def test_load_vocabulary_prefers_tokenizer_json(llama_bpe: Tokenizer, tmp_path: Path) -> None:
    folder = LocalDirectory(tmp_path)
    assert load_vocabulary(folder) is None
    (tmp_path / "tokenizer.model").write_bytes(_sentencepiece_model())
    found = load_vocabulary(folder)
    assert found is not None and found.kind == "sentencepiece_bpe"
    assert found.source == f"{tmp_path}/tokenizer.model"
    (tmp_path / "tokenizer.json").write_bytes(_json(llama_bpe))
    found = load_vocabulary(folder)
    assert found is not None and found.size == llama_bpe.get_vocab_size()


def test_load_vocabulary_gpt2_vocab_json(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text(json.dumps({"the": 0, "Ġthe": 1, "Ċ": 2}))
    assert load_vocabulary(LocalDirectory(tmp_path)) is None  # no merges.txt: not GPT-2 style
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ t\n")
    found = load_vocabulary(LocalDirectory(tmp_path))
    assert found is not None and found.kind == "byte_bpe"
    assert found.normalized == (b"the", b" the", b"\n")


# ---------------------------------------------------------------- hostile input


def _raises(message: str) -> Any:
    return pytest.raises(TokenizerError, match=re.escape(message))


def test_truncated_protobuf() -> None:
    data = _sentencepiece_model()
    with _raises("tokenizer.model: protobuf field runs past the end of the data at byte 2"):
        vocabulary_from_sentencepiece_model(data[:10], "tokenizer.model")
    with _raises("tokenizer.model: protobuf varint runs past the end of the data at byte 1"):
        vocabulary_from_sentencepiece_model(b"\x0a", "tokenizer.model")
    with _raises("tokenizer.model: protobuf varint longer than 10 bytes ending at byte 10"):
        vocabulary_from_sentencepiece_model(b"\xff" * 12, "tokenizer.model")
    with _raises("unsupported protobuf wire type 3 at byte 1"):
        vocabulary_from_sentencepiece_model(b"\x0b", "tokenizer.model")
    with _raises("piece 0 has no text"):
        vocabulary_from_sentencepiece_model(_field(1, _field(3, 1, wire=0)), "m")
    with _raises("piece 0 is not valid UTF-8"):
        vocabulary_from_sentencepiece_model(_field(1, _field(1, b"\xff")), "m")
    with _raises("the SentencePiece model holds no pieces"):
        vocabulary_from_sentencepiece_model(b"", "m")
    with _raises("token 0 has type BYTE but its text 'x' is not <0xXX>"):
        vocabulary_from_sentencepiece_model(_field(1, _piece("x", 0.0, BYTE)), "m")


def test_bad_json() -> None:
    with _raises("tokenizer.json: not valid JSON (JSONDecodeError) — re-download"):
        vocabulary_from_tokenizer_json(b"{not json", "tokenizer.json")
    with _raises("not valid JSON (UnicodeDecodeError)"):
        vocabulary_from_tokenizer_json(b"\xff\xfe\x00", "tokenizer.json")
    with _raises("not valid JSON (RecursionError)"):
        vocabulary_from_tokenizer_json(b"[" * 100_000, "tokenizer.json")
    with _raises("tokenizer.json has no 'model' object"):
        vocabulary_from_tokenizer_json(b"[1, 2]", "tokenizer.json")
    with _raises("a JSON object repeats a key"):
        vocabulary_from_tokenizer_json(b'{"model": {"vocab": {"a": 0, "a": 1}}}', "t")


def _bpe(vocab: Any, added: Any = None) -> bytes:
    return json.dumps({"model": {"type": "BPE", "vocab": vocab}, "added_tokens": added}).encode()


def test_bad_ids() -> None:
    with _raises("t: id 1 is given to both 'a' and 'b'"):
        vocabulary_from_tokenizer_json(_bpe({"x": 0, "a": 1, "b": 1}), "t")
    with _raises("token 'a' has id -1, expected a non-negative integer"):
        vocabulary_from_tokenizer_json(_bpe({"a": -1}), "t")
    with _raises("token 'a' has id True, expected a non-negative integer"):
        vocabulary_from_tokenizer_json(_bpe({"a": True}), "t")
    with _raises("token 'a' has id 1000000000000, over the limit of 16777216"):
        vocabulary_from_tokenizer_json(_bpe({"a": 10**12}), "t")
    with _raises("ids run to 100000 but only 2 tokens are defined"):
        vocabulary_from_tokenizer_json(_bpe({"a": 0, "b": 100_000}), "t")
    with _raises("added tokens repeat id 5"):
        added = [{"id": 5, "content": "<a>"}, {"id": 5, "content": "<b>"}]
        vocabulary_from_tokenizer_json(_bpe({"a": 0}, added), "t")
    with _raises("token '<a>' has id [5], expected a non-negative integer"):
        vocabulary_from_tokenizer_json(_bpe({"a": 0}, [{"id": [5], "content": "<a>"}]), "t")
    with _raises("the vocabulary is not an object of token → id"):
        vocabulary_from_tokenizer_json(_bpe(["a"]), "t")
    with _raises("the tokenizer holds no tokens"):
        vocabulary_from_tokenizer_json(_bpe({}), "t")
    with _raises("tokenizer model type 'Magic' is not supported"):
        vocabulary_from_tokenizer_json(b'{"model": {"type": "Magic"}}', "t")
    with _raises("Unigram entry 1 is not [piece, score]"):
        body = {"model": {"type": "Unigram", "vocab": [["a", -1.0], ["b"]]}}
        vocabulary_from_tokenizer_json(json.dumps(body).encode(), "t")


def test_bad_gguf_and_text_files() -> None:
    meta: dict[str, Any] = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"]}
    with _raises("m.gguf: 2 tokens but 1 token types"):
        vocabulary_from_gguf({**meta, "tokenizer.ggml.token_type": [1]}, "m.gguf")
    with _raises("token 1 has type 9, which is not a token type"):
        vocabulary_from_gguf({**meta, "tokenizer.ggml.token_type": [1, 9]}, "m.gguf")
    with _raises("token 1 is int, expected a string"):
        vocabulary_from_gguf({**meta, "tokenizer.ggml.tokens": ["a", 7]}, "m.gguf")
    with _raises("GGUF tokenizer model 'rwkv' is not supported"):
        vocabulary_from_gguf({**meta, "tokenizer.ggml.model": "rwkv"}, "m.gguf")
    with _raises("vocab.txt: not valid UTF-8 at byte 2"):
        vocabulary_from_vocab_txt(b"a\n\xff\n", "vocab.txt")
    with _raises("the vocabulary is not an object of token → id"):
        vocabulary_from_vocab_json(b"[]", "vocab.json")


def test_file_over_the_limit(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\nthe\n" * 20)
    message = f"{tmp_path}/vocab.txt: over the 100-byte limit for a tokenizer file — the file"
    with _raises(message):
        load_vocabulary(LocalDirectory(tmp_path), limit=100)
    found = load_vocabulary(LocalDirectory(tmp_path), limit=1000)
    assert found is not None and found.id_of(b" the") == 1 and found.id_of("[PAD]") == 0


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_raw_exceptions(data: bytes) -> None:
    for read in (
        vocabulary_from_sentencepiece_model,
        vocabulary_from_tokenizer_json,
        vocabulary_from_vocab_txt,
        vocabulary_from_vocab_json,
    ):
        try:
            vocabulary = read(data, "f")
        except TokenizerError:
            continue
        assert len(vocabulary.normalized) == len(vocabulary.tokens) == vocabulary.size


@given(st.data())
def test_corrupted_sentencepiece_model_fails_cleanly(data: st.DataObject) -> None:
    model = bytearray(_sentencepiece_model())
    for _ in range(data.draw(st.integers(1, 4))):
        model[data.draw(st.integers(0, len(model) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(model)))
    with contextlib.suppress(TokenizerError):
        vocabulary_from_sentencepiece_model(bytes(model[:cut]), "m")
