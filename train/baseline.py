"""TF-IDF + logistic regression on the same splits and metrics as the transformer.

`python train/baseline.py --model_dir models/stance` writes `baseline.json` into the
model directory (and refreshes its card), so every report shows how far the fine-tuned
model is ahead. Word 1–2-grams plus character 2–5-grams within word bounds: a strong,
honest multilingual baseline, class-balanced like the transformer's loss.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline, make_union
from transformers import HfArgumentParser

from stance.data import load_labelled_splits, read_records
from stance.errors import exit_code
from stance.evaluation import build_report, report_markdown
from stance.labels import HEADS
from stance.model_card import write_model_card


@dataclass
class BaselineArguments:
    data: list[str] = field(default_factory=lambda: ["data"], metadata={"help": "Corpus folders or files."})
    labels: str | None = field(default=None, metadata={"help": "Label schema JSON (default: the data's)."})
    model_dir: str | None = field(default=None, metadata={"help": "Write baseline.json into this model directory."})
    output: str | None = field(default=None, metadata={"help": "Also write the report JSON here."})
    file: list[str] | None = field(default=None, metadata={"help": "Also evaluate on these labelled files."})
    c: float = field(default=10.0, metadata={"help": "Inverse regularisation strength of the logistic regression."})
    seed: int = field(default=13)


def baseline_pipeline(c: float, seed: int):
    """The TF-IDF features and the classifier for one head."""
    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=1, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
    )
    return make_pipeline(features, LogisticRegression(C=c, max_iter=3000, class_weight="balanced", random_state=seed))


def run(args: BaselineArguments) -> dict:
    splits, schema = load_labelled_splits(args.data, args.labels)
    if args.file:
        splits["files"] = [record for path in args.file for record in read_records(Path(path))]
    evaluated = [name for name in ("validation", "test", "files") if splits.get(name)]
    texts = {name: [str(r["text"]) for r in records] for name, records in splits.items()}
    predicted: dict[str, dict[str, list[str]]] = {name: {} for name in evaluated}
    for head in HEADS:
        model = baseline_pipeline(args.c, args.seed).fit(texts["train"], [str(r[head]) for r in splits["train"]])
        for name in evaluated:
            predicted[name][head] = list(model.predict(texts[name]))
    return {name: build_report(splits[name], predicted[name], schema, None, name) for name in evaluated}


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(BaselineArguments).parse_args_into_dataclasses(args=argv)
    return exit_code(lambda: publish(args))


def publish(args: BaselineArguments) -> None:
    """Fit, evaluate, print the reports and write them where asked."""
    reports = run(args)
    for name, scores in reports.items():
        print(report_markdown(scores, f"TF-IDF baseline, {name} split"))
    payload = json.dumps(reports, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(payload, encoding="utf-8")
    if args.model_dir:
        (Path(args.model_dir) / "baseline.json").write_text(payload, encoding="utf-8")
        write_model_card(Path(args.model_dir))


if __name__ == "__main__":
    sys.exit(main())
