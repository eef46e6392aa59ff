"""train/evaluate.py and train/baseline.py, run as users run them: reports, figures, card."""

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from conftest import REPO, write_jsonl
from sklearn.metrics import accuracy_score, f1_score

from stance.labels import HEADS
from stance.predict import Predictor


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "train" / script), *args], capture_output=True, text=True, timeout=600
    )


def _mixed_sources_file(corpus: Path, path: Path) -> list[dict]:
    """The corpus's test records, half of them marked as coming from whole articles."""
    records = [json.loads(line) for line in (corpus / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    chosen = [r | {"source": "article" if i % 2 else "written"} for i, r in enumerate(records) if r["split"] == "test"]
    write_jsonl(path, chosen)
    return chosen


def test_evaluate_writes_sklearn_metrics_figures_and_breakdowns(
    tiny_trained_model: Path, small_corpus: Path, tmp_path: Path
) -> None:
    model = shutil.copytree(tiny_trained_model, tmp_path / "model")
    records = _mixed_sources_file(small_corpus, tmp_path / "mixed.jsonl")
    out = tmp_path / "report"
    result = _run(
        "evaluate.py", "--model_dir", str(model), "--file", str(tmp_path / "mixed.jsonl"), "--output_dir", str(out)
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == len(records)
    predictions = Predictor(model, backend="torch").predict([r["text"] for r in records])
    for head in HEADS:
        gold = [r[head] for r in records]
        ours = [getattr(p, head).label for p in predictions]
        scores = report["heads"][head]
        assert scores["accuracy"] == accuracy_score(gold, ours)
        labels = scores["confusion_matrix"]["labels"]
        assert scores["macro_f1"] == f1_score(gold, ours, labels=labels, average="macro", zero_division=0)
        matrix = scores["confusion_matrix"]["matrix"]
        assert [sum(row) for row in matrix] == [Counter(gold)[label] for label in labels]  # rows are gold
        assert [sum(col) for col in zip(*matrix, strict=True)] == [Counter(ours)[label] for label in labels]
        for label in labels:
            assert set(scores["report"][label]) == {"precision", "recall", "f1-score", "support"}
        assert {lang: s["n"] for lang, s in scores["per_language"].items()} == Counter(r["lang"] for r in records)
        assert {src: s["n"] for src, s in scores["per_source"].items()} == Counter(r["source"] for r in records)
        png = Path(scores["confusion_png"])  # outside the model directory: absolute
        assert png.parent == out and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    for section in ("per class", "confusion matrix", "per language", "per source"):
        assert section in markdown, section


def test_crosslingual_run_trains_on_english_and_lands_in_the_card(
    tiny_trained_model: Path, small_corpus: Path, tmp_path: Path
) -> None:
    model = shutil.copytree(tiny_trained_model, tmp_path / "model")
    result = _run("evaluate.py", "--model_dir", str(model), "--data", str(small_corpus), "--crosslingual")
    assert result.returncode == 0, result.stderr
    transfer = json.loads((model / "crosslingual.json").read_text())
    test = [json.loads(line) for line in (small_corpus / "corpus.jsonl").read_text().splitlines()]
    test = [r for r in test if r["split"] == "test"]
    assert {lang: s["n"] for lang, s in transfer["heads"]["stance"]["per_language"].items()} == Counter(
        r["lang"] for r in test
    )
    inside = json.loads((model / "eval-test" / "report.json").read_text())  # the default report folder
    assert inside["heads"]["stance"]["confusion_png"] == "eval-test/test-stance-confusion.png"
    assert (model / "eval-test" / "test-stance-confusion.png").is_file()
    assert "## Cross-lingual transfer: trained on English only" in (model / "README.md").read_text()


def test_baseline_scores_the_same_splits_and_joins_the_card(
    tiny_trained_model: Path, small_corpus: Path, tmp_path: Path
) -> None:
    model = shutil.copytree(tiny_trained_model, tmp_path / "model")
    records = _mixed_sources_file(small_corpus, tmp_path / "mixed.jsonl")
    result = _run(
        "baseline.py", "--data", str(small_corpus), "--model_dir", str(model), "--file", str(tmp_path / "mixed.jsonl")
    )
    assert result.returncode == 0, result.stderr
    baseline = json.loads((model / "baseline.json").read_text())
    assert set(baseline) == {"validation", "test", "files"}
    assert baseline["files"]["n"] == len(records)
    assert set(baseline["files"]["heads"]["claim_type"]["per_source"]) == {"article", "written"}
    assert "TF-IDF baseline, test split" in result.stdout
    card = (model / "README.md").read_text()
    assert "## Baseline: TF-IDF + logistic regression, same splits" in card
    for head in HEADS:
        theirs = baseline["test"]["heads"][head]["macro_f1"]
        assert f"| {head} | test | {theirs:.3f} |" in card


def test_evaluate_errors_are_one_line(tiny_trained_model: Path, small_corpus: Path, tmp_path: Path) -> None:
    result = _run("evaluate.py", "--model_dir", str(tiny_trained_model), "--data", str(small_corpus), "--split", "dev")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown split 'dev': use train, validation or test"
    missing = tmp_path / "nope.jsonl"
    result = _run("evaluate.py", "--model_dir", str(tiny_trained_model), "--file", str(missing))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {missing}: no such file"
