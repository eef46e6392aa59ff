"""Evaluation with scikit-learn: accuracy, macro-F1, per-class report, confusion matrices, per language.

The report is a JSON-able dict; :func:`report_markdown` renders it, and confusion
matrices are also saved as PNG. Predictions come from the same :class:`Predictor`
that serves users.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from stance.data import Record
from stance.labels import HEADS, LabelSchema


def score_labels(gold: Sequence[str], predicted: Sequence[str], labels: list[str]) -> dict:
    """sklearn metrics for one head: accuracy, macro-F1, classification report, confusion matrix."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    return {
        "n": len(gold),
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)),
        "report": classification_report(gold, predicted, labels=labels, output_dict=True, zero_division=0),
        "confusion_matrix": {"labels": labels, "matrix": confusion_matrix(gold, predicted, labels=labels).tolist()},
    }


def build_report(
    records: Sequence[Record], predicted: dict[str, list[str]], schema: LabelSchema, figures_dir: Path | None, name: str
) -> dict:
    """Overall, per-language and (for mixed sources) per-source metrics for both heads;
    confusion-matrix PNGs into `figures_dir`."""
    report: dict = {"n": len(records), "heads": {}}
    # Sources differ in kind (single written sentences, whole articles, the seed): a mixed
    # split's overall score hides how each fares.
    breakdowns = {"per_language": _rows_by(records, "lang")}
    if len({r.get("source") for r in records}) > 1:
        breakdowns["per_source"] = _rows_by(records, "source")
    for head in HEADS:
        gold = [str(r[head]) for r in records]
        overall = score_labels(gold, predicted[head], schema[head])
        for key, groups in breakdowns.items():
            overall[key] = {}
            for value, rows in groups.items():
                scored = score_labels([gold[i] for i in rows], [predicted[head][i] for i in rows], schema[head])
                overall[key][value] = {k: scored[k] for k in ("n", "accuracy", "macro_f1")}
        if figures_dir is not None:
            overall["confusion_png"] = str(
                save_confusion_png(overall["confusion_matrix"], figures_dir / f"{name}-{head}-confusion.png", head)
            )
        report["heads"][head] = overall
    return report


def _rows_by(records: Sequence[Record], field_name: str) -> dict[str, list[int]]:
    """Record indices grouped by the value of one field ("?" when missing), values in sorted order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[str(record.get(field_name) or "?")].append(i)
    return dict(sorted(groups.items()))


def breakdown_rows(report: dict, key: str) -> list[str]:
    """Markdown table rows `| value | n | claim-type macro-F1 | stance macro-F1 |` of one breakdown
    of a report (`per_language` or `per_source`)."""
    heads = report["heads"]
    return [
        f"| {value} | {scores['n']} | {scores['macro_f1']:.3f} | {heads['stance'][key][value]['macro_f1']:.3f} |"
        for value, scores in heads["claim_type"][key].items()
    ]


def evaluate_records(
    model_dir: Path, records: Sequence[Record], figures_dir: Path | None = None, name="eval", backend: str = "torch"
) -> dict:
    """Predict `records` with the model in `model_dir` (torch, the reference, unless told) and score them."""
    from stance.predict import Predictor

    predictor = Predictor(model_dir, backend=backend)
    predictions = predictor.predict([str(r["text"]) for r in records])
    predicted = {
        "claim_type": [p.claim_type.label for p in predictions],
        "stance": [p.stance.label for p in predictions],
    }
    report = build_report(records, predicted, predictor.labels, figures_dir, name)
    if figures_dir is not None:  # figures inside the model directory, which moves, are named relative to it
        for head in HEADS:
            png = Path(report["heads"][head]["confusion_png"])
            if png.is_relative_to(Path(model_dir)):
                report["heads"][head]["confusion_png"] = str(png.relative_to(Path(model_dir)))
    return report


def save_confusion_png(confusion: dict, path: Path, title: str) -> Path:
    """Draw a confusion matrix (rows gold, columns predicted) to PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 5))
    display = ConfusionMatrixDisplay(np.array(confusion["matrix"]), display_labels=confusion["labels"])
    display.plot(ax=ax, cmap="Blues", colorbar=False, xticks_rotation=35)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report_markdown(report: dict, title: str) -> str:
    """Render one evaluation report as Markdown tables."""
    lines = [f"### {title} ({report['n']} sentences)", ""]
    lines += ["| head | accuracy | macro-F1 |", "|---|---|---|"]
    for head, scores in report["heads"].items():
        lines.append(f"| {head} | {scores['accuracy']:.3f} | {scores['macro_f1']:.3f} |")
    lines.append("")
    for head, scores in report["heads"].items():
        lines += [f"**{head}** per class", "", "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for label in scores["confusion_matrix"]["labels"]:
            row = scores["report"][label]
            lines.append(
                f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1-score']:.3f} | "
                f"{int(row['support'])} |"
            )
        lines.append("")
        labels = scores["confusion_matrix"]["labels"]
        lines += [f"**{head}** confusion matrix (rows gold, columns predicted)", ""]
        lines += ["| gold \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for label, row in zip(labels, scores["confusion_matrix"]["matrix"], strict=True):
            lines.append(f"| {label} | " + " | ".join(map(str, row)) + " |")
        lines.append("")
    for key, column in (("per_language", "lang"), ("per_source", "source")):
        if key not in report["heads"]["claim_type"]:
            continue
        lines += [f"**{key.replace('_', ' ')}** (macro-F1)", "", f"| {column} | n | claim_type | stance |"]
        lines += ["|---|---|---|---|", *breakdown_rows(report, key), ""]
    return "\n".join(lines)
