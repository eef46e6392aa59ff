"""Training end to end on a tiny model: save, load, predict, label sets, bad data, reports."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, seed_records, write_jsonl

from stance.errors import StanceError
from stance.model import StanceModel, load_encoder
from stance.predict import Predictor
from stance.trainer import TrainArguments, train

SCHEMA = json.loads((REPO / "data" / "labels.json").read_text())


def _args(corpus: Path, base: Path, out: Path, **overrides) -> TrainArguments:
    settings = dict(max_steps=4, batch_size=8, learning_rate=1e-3, max_length=32, logging_steps=2)
    return TrainArguments(data=[str(corpus)], base_model=str(base), output_dir=str(out), **(settings | overrides))


def test_model_directory_is_complete(tiny_trained_model: Path) -> None:
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "heads.safetensors",
        "stance.json",
        "metrics.json",
        "README.md",
    ):
        assert (tiny_trained_model / name).is_file(), name
    config = json.loads((tiny_trained_model / "stance.json").read_text())
    assert config["labels"] == SCHEMA
    assert config["training"]["max_steps"] == 6
    metrics = json.loads((tiny_trained_model / "metrics.json").read_text())
    assert set(metrics) >= {"validation", "test", "training_seconds"}
    card = (tiny_trained_model / "README.md").read_text()
    assert "## Evaluation" in card and "test split" in card and "python train/train.py" in card
    assert not list(tiny_trained_model.parent.glob(".model-*")), "staging folder left behind"


def test_save_then_load_gives_the_same_probabilities(tiny_base_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    torch.manual_seed(1)
    model = StanceModel(load_encoder(str(tiny_base_model)), SCHEMA).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    model.save(tmp_path / "m", tokenizer, {"input_prefix": "", "max_length": 32})
    texts = [r["text"] for r in seed_records()[:10]]
    encoded = tokenizer(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**encoded)
    predictor = Predictor(tmp_path / "m", backend="torch")
    after = predictor.probability_matrices(texts)
    for head in ("claim_type", "stance"):
        assert torch.allclose(before[f"{head}_logits"].softmax(-1), torch.from_numpy(after[head]), atol=1e-6)


def test_trained_predictions_match_the_recorded_metrics(tiny_trained_model: Path) -> None:
    """Reloading the model reproduces the validation accuracy recorded at training time."""
    metrics = json.loads((tiny_trained_model / "metrics.json").read_text())
    records = [r for i, r in enumerate(seed_records()) if i % 5 == 0]
    predictions = Predictor(tiny_trained_model).predict([r["text"] for r in records])
    for head in ("claim_type", "stance"):
        accuracy = sum(getattr(p, head).label == r[head] for p, r in zip(predictions, records, strict=True)) / len(
            records
        )
        assert accuracy == pytest.approx(metrics["validation"]["heads"][head]["accuracy"])
    for p in predictions:
        assert sum(p.claim_type.probabilities.values()) == pytest.approx(1, abs=1e-4)
        assert p.claim_type.label in SCHEMA["claim_type"] and p.stance.label in SCHEMA["stance"]


def test_training_is_deterministic(tiny_base_model: Path, small_corpus: Path, tmp_path: Path) -> None:
    first = train(_args(small_corpus, tiny_base_model, tmp_path / "a", evaluate_test=False))
    second = train(_args(small_corpus, tiny_base_model, tmp_path / "b", evaluate_test=False))
    digest = [hashlib.sha256((d / "heads.safetensors").read_bytes()).hexdigest() for d in (first, second)]
    assert digest[0] == digest[1]


def test_bf16_flag_is_parsed_applied_and_recorded(tiny_base_model: Path, small_corpus: Path, tmp_path: Path) -> None:
    """--bf16 defaults to the hardware's answer; either way the saved weights stay float32."""
    from safetensors.torch import load_file
    from transformers import HfArgumentParser

    parser = HfArgumentParser(TrainArguments)
    assert [
        parser.parse_args_into_dataclasses(args=a)[0].bf16 for a in ([], ["--bf16", "true"], ["--bf16", "false"])
    ] == [
        None,
        True,
        False,
    ]
    runs = {
        bf16: train(_args(small_corpus, tiny_base_model, tmp_path / str(bf16), bf16=bf16)) for bf16 in (True, False)
    }
    for bf16, out in runs.items():
        assert json.loads((out / "stance.json").read_text())["training"]["bf16"] is bf16
        assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.float32}
        assert ("bfloat16 mixed" in (out / "README.md").read_text()) is bf16
    digest = [hashlib.sha256((d / "heads.safetensors").read_bytes()).hexdigest() for d in runs.values()]
    assert digest[0] != digest[1], "bf16 made no difference: autocast was not applied"


def test_other_label_sets(tiny_base_model: Path, tmp_path: Path) -> None:
    """A user's own labels: read from their labels.json, used by the heads and the predictions."""
    corpus = tmp_path / "own"
    corpus.mkdir()
    claim = {"accusation": "blame", "denial": "rebuttal"}
    records = [
        r
        | {
            "claim_type": claim.get(r["claim_type"], "report"),
            "stance": "pro" if r["stance"] == "supportive" else "anti",
        }
        | {"split": ("validation", "train", "train")[i % 3]}
        for i, r in enumerate(seed_records())
    ]
    write_jsonl(corpus / "own.jsonl", records)
    schema = {"claim_type": ["blame", "rebuttal", "report"], "stance": ["pro", "anti"]}
    (corpus / "labels.json").write_text(json.dumps(schema))
    out = train(_args(corpus, tiny_base_model, tmp_path / "model"))
    assert json.loads((out / "stance.json").read_text())["labels"] == schema
    prediction = Predictor(out).predict(["Russia accused Ukraine."])[0]
    assert set(prediction.claim_type.probabilities) == set(schema["claim_type"])
    assert set(prediction.stance.probabilities) == {"pro", "anti"}


def test_labels_are_inferred_without_a_schema_file(tiny_base_model: Path, small_corpus: Path, tmp_path: Path) -> None:
    (small_corpus / "labels.json").unlink()
    out = train(_args(small_corpus, tiny_base_model, tmp_path / "m", evaluate_test=False))
    labels = json.loads((out / "stance.json").read_text())["labels"]
    assert labels["stance"] == sorted({r["stance"] for i, r in enumerate(seed_records()) if i % 5 >= 2})


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"claim_type": "rumour"}, r"corpus\.jsonl:3: unknown-label: claim_type 'rumour' is not one of"),
        ({"stance": None}, r"corpus\.jsonl:3: missing-field: 'stance' is missing"),
        ({"text": "   "}, r"corpus\.jsonl:3: empty-text"),
    ],
)
def test_bad_records_name_file_and_line(
    tiny_base_model: Path, small_corpus: Path, tmp_path: Path, change: dict, expected: str
) -> None:
    path = small_corpus / "corpus.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[2] = {k: v for k, v in (records[2] | change).items() if v is not None}
    write_jsonl(path, records)
    with pytest.raises(StanceError, match=expected):
        train(_args(small_corpus, tiny_base_model, tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_empty_and_malformed_files(tiny_base_model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(StanceError, match=r"empty\.jsonl: empty: the file holds no records"):
        train(_args(empty, tiny_base_model, tmp_path / "m"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine", "claim_type": "other", "stance": "neutral"}\n{"text": \n')
    with pytest.raises(StanceError, match=r"broken\.jsonl:2: json: not valid JSON"):
        train(_args(broken, tiny_base_model, tmp_path / "m"))


def test_csv_without_splits_gets_split_by_group(tiny_base_model: Path, tmp_path: Path) -> None:
    import csv

    path = tmp_path / "mine.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "text", "claim_type", "stance"])
        writer.writeheader()
        for r in seed_records():
            writer.writerow({k: r[k] for k in ("id", "text", "claim_type", "stance")})
    out = train(_args(path, tiny_base_model, tmp_path / "m", evaluate_test=False))
    assert json.loads((out / "stance.json").read_text())["train_size"] > 0


def test_train_script_cli_reports_errors_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    result = subprocess.run(
        [sys.executable, str(REPO / "train" / "train.py"), "--data", str(missing), "--output_dir", str(tmp_path / "m")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {missing}: no such file"


def test_accelerate_launch_with_one_cpu_process(tiny_base_model: Path, small_corpus: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(REPO / "train" / "train.py"),
            "--data",
            str(small_corpus),
            "--base_model",
            str(tiny_base_model),
            "--output_dir",
            str(tmp_path / "m"),
            "--max_steps",
            "2",
            "--batch_size",
            "8",
            "--max_length",
            "32",
            "--evaluate_test",
            "false",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "m")
    assert (tmp_path / "m" / "heads.safetensors").is_file()
