"""Test-wide settings: offline, and temporary stores so tests never touch the user's caches."""

import json
import os
import tempfile
from pathlib import Path

import pytest

# Set before anything imports transformers, datasets or bentoml.
_SCRATCH = Path(tempfile.mkdtemp(prefix="stance-tests-"))
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    BENTOML_DO_NOT_TRACK="True",
    TOKENIZERS_PARALLELISM="false",
    HF_HOME=str(_SCRATCH / "hf"),
    BENTOML_HOME=str(_SCRATCH / "bentoml"),
    STANCE_HOME=str(_SCRATCH / "stance"),
)


@pytest.fixture(scope="session")
def e5_checkpoint() -> Path:
    """The converted multilingual-e5-small, materialized once per test session."""
    from stance.base_model import materialize

    return materialize()


REPO = Path(__file__).resolve().parents[1]


def build_tiny_base_model(folder: Path, texts: list[str]) -> Path:
    """A tiny BERT (2 layers, 32 wide) with a WordPiece tokenizer trained on `texts`, built in code."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    fast.save_pretrained(folder)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def seed_records() -> list[dict]:
    """The gold-labelled seed sentences, as dicts."""
    return [json.loads(line) for line in (REPO / "data" / "seed.jsonl").read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [r["text"] for r in seed_records()]
    return build_tiny_base_model(tmp_path_factory.mktemp("tiny-bert"), texts)


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    """A small labelled corpus folder: the seed sentences, split 60/20/20, with the bundled labels.json."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    records = []
    for i, record in enumerate(seed_records()):
        split = ("validation", "test", "train", "train", "train")[i % 5]
        records.append(record | {"split": split, "lang": "en" if i % 2 else "de"})
    write_jsonl(folder / "corpus.jsonl", records)
    (folder / "labels.json").write_text((REPO / "data" / "labels.json").read_text())
    return folder


@pytest.fixture(scope="session")
def tiny_trained_model(tiny_base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stance model trained for a few steps on the seed sentences, shared by the tests that only read it."""
    from stance.trainer import TrainArguments, train

    folder = tmp_path_factory.mktemp("trained")
    corpus = folder / "corpus"
    corpus.mkdir()
    write_jsonl(
        corpus / "corpus.jsonl",
        [r | {"split": ("validation", "test", "train", "train", "train")[i % 5]} for i, r in enumerate(seed_records())],
    )
    (corpus / "labels.json").write_text((REPO / "data" / "labels.json").read_text())
    args = TrainArguments(
        data=[str(corpus)],
        base_model=str(tiny_base_model),
        output_dir=str(folder / "model"),
        max_steps=6,
        batch_size=8,
        learning_rate=1e-3,
        max_length=32,
    )
    return train(args)


def pytest_sessionfinish(session, exitstatus) -> None:
    import shutil

    shutil.rmtree(_SCRATCH, ignore_errors=True)
