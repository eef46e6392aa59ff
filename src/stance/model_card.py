"""The model card (`README.md` of a model directory), written from the training run's own files.

It reads `stance.json` (labels, training configuration), `metrics.json` (evaluation),
and, when present, `baseline.json` (TF-IDF baseline on the same splits) and
`crosslingual.json` (train on English, evaluate per language). Re-run
:func:`write_model_card` after adding either of those.
"""

from __future__ import annotations

import json
from pathlib import Path

from stance.evaluation import breakdown_rows, report_markdown
from stance.labels import HEADS
from stance.predict import default_backend


def _read(folder: Path, name: str) -> dict | None:
    path = folder / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_model_card(model_dir: Path) -> Path:
    """Write `README.md` into `model_dir` from the files the training run left there."""
    model_dir = Path(model_dir)
    config = _read(model_dir, "stance.json") or {}
    metrics = _read(model_dir, "metrics.json") or {}
    baseline = _read(model_dir, "baseline.json")
    crosslingual = _read(model_dir, "crosslingual.json")
    onnx = _read(model_dir, "onnx.json")
    training = config.get("training", {})
    labels = config.get("labels", {})
    lines = [
        "---",
        "license: mit",
        "library_name: stance",
        "pipeline_tag: text-classification",
        "---",
        "",
        "# stance sentence classifier",
        "",
        "Labels every sentence of a news article with a **claim type** and a **stance**, in one forward "
        "pass of a shared encoder with two linear heads on the mean-pooled token vectors.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{config.get('base_model', '?')}` |",
        f"| claim types | {', '.join(labels.get('claim_type', []))} |",
        f"| stances | {', '.join(labels.get('stance', []))} |",
        f"| input prefix | `{config.get('input_prefix', '')!r}` |",
        f"| max length | {config.get('max_length')} tokens (longer sentences are truncated and flagged) |",
        f"| training sentences | {config.get('train_size')} |",
        f"| training time | {metrics.get('training_seconds')} s |",
        f"| precision | {'bfloat16 mixed (float32 weights)' if training.get('bf16') else 'float32'} |",
        "",
        "## Use",
        "",
        "```python",
        "import stance",
        'predictor = stance.load("path/to/this/folder")',
        'predictor.predict(["The ministry dismissed the reports as a fabrication."])',
        "```",
        "",
        "## Data",
        "",
        f"Trained on {', '.join(map(str, training.get('data', [])))} (see its datasheet, `data/README.md`): "
        "news-register sentences in en, ru, uk, ar, fr, de, es, tr, derived from a seed article on a UN "
        "Security Council exchange over Syria, written for other conflicts, and whole written articles; splits "
        "by group (an article is one group), the seed article and its translations in test only.",
        "",
        "## Evaluation",
        "",
    ]
    for split in ("test", "validation"):
        if split in metrics:
            lines.append(report_markdown(metrics[split], f"{split} split"))
    for report_path in sorted(model_dir.glob("eval-*/report.json")):
        name = report_path.parent.name.removeprefix("eval-")
        if name not in ("test", "validation"):
            report = json.loads(report_path.read_text(encoding="utf-8"))
            lines.append(report_markdown(report, f"{name} (train/evaluate.py)"))
    if baseline:
        lines += [
            "## Baseline: TF-IDF + logistic regression, same splits",
            "",
            "| head | split | baseline macro-F1 | this model | difference |",
            "|---|---|---|---|---|",
        ]
        ours_by_name = {split: metrics[split] for split in ("test", "validation") if split in metrics}
        heldout = _read(model_dir / "eval-heldout", "report.json")
        if heldout and "files" in baseline:  # `baseline.py --file` on the same held-out articles
            ours_by_name["held-out articles"] = heldout
            baseline = baseline | {"held-out articles": baseline["files"]}
        for name, ours_report in ours_by_name.items():
            if name in baseline:
                for head in HEADS:
                    ours = ours_report["heads"][head]["macro_f1"]
                    theirs = baseline[name]["heads"][head]["macro_f1"]
                    lines.append(f"| {head} | {name} | {theirs:.3f} | {ours:.3f} | {100 * (ours - theirs):+.1f} pts |")
        lines.append("")
    if crosslingual:
        lines += ["## Cross-lingual transfer: trained on English only, test split per language", ""]
        lines += ["| lang | n | claim_type macro-F1 | stance macro-F1 |", "|---|---|---|---|"]
        lines += [*breakdown_rows(crosslingual, "per_language"), ""]
    if onnx:
        lines += [
            "## Fast CPU inference (ONNX Runtime)",
            "",
            f"`model.onnx` (fp32) and `model-int8.onnx` (dynamic int8, recipe `{onnx.get('int8_recipe', 'all')}`; "
            f"{onnx.get('int8_fp32_channels', 0)} outlier input channels kept on fp32 side paths) hold the "
            "encoder, mean pooling and both heads. Parity with torch (for int8, the lower label agreement of "
            f"batched and one-sentence-at-a-time runs). The {onnx.get('split', 'test')} split ranked the int8 "
            "recipes, fastest first, and the other splits gated them (a failed gate only sends export to a slower "
            "recipe); int8 or fp32 ONNX is the default backend only if its bar holds on every split below:",
            "",
            "| split | backend | head | max abs prob. difference | labels agree | macro-F1 | torch macro-F1 |",
            "|---|---|---|---|---|---|---|",
        ]
        for split, results in ((onnx.get("split", "test"), onnx), *onnx.get("reported", {}).items()):
            for backend in ("onnx", "onnx-int8"):
                for head in HEADS:
                    e = results[backend][head]
                    lines.append(
                        f"| {split} ({results['n']}) | {backend} | {head} | {e['max_abs_diff']:.1e} | "
                        f"{e['label_agreement']:.2%} | {e.get('macro_f1', float('nan')):.4f} | "
                        f"{e.get('torch_macro_f1', float('nan')):.4f} |"
                    )
        lines += ["", f"Default backend (`--backend auto`): **{default_backend(model_dir)}**.", ""]
    lines += [
        "## Limits",
        "",
        "- The corpus is synthetic news prose written for this project; real articles are messier "
        "(page furniture, long quotes, mixed languages). Expect lower scores on them.",
        "- One label per sentence: sentences that mix claims take the type of their main clause.",
        "- Languages outside the eight of the corpus work only through the encoder's transfer.",
        "- Labels describe what a sentence does, not whether it is true.",
        "",
        "## Reproduce",
        "",
        "```bash",
        "python train/train.py " + " ".join(_flags(training)),
        "python train/baseline.py --model-dir <this folder>",
        "```",
        "",
    ]
    path = model_dir / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _flags(training: dict) -> list[str]:
    flags = []
    for key, value in training.items():
        if value is None:
            continue
        if isinstance(value, list):
            flags.append(f"--{key} " + " ".join(map(str, value)))
        else:
            flags.append(f"--{key} {value}")
    return flags
