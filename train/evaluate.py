"""Evaluate a model directory with scikit-learn: `python train/evaluate.py --model_dir models/stance`.

Writes report.json, report.md and confusion-matrix PNGs (overall and per language in the
tables) for one split or file. With --crosslingual it also trains the same configuration
on English only, evaluates it on the test split per language, stores the result as
`crosslingual.json` in the model directory and refreshes the model card.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from transformers import HfArgumentParser

from stance.data import load_labelled_splits, read_records
from stance.errors import StanceError, exit_code
from stance.evaluation import evaluate_records, report_markdown
from stance.model import read_model_config
from stance.model_card import write_model_card
from stance.trainer import TrainArguments, train


@dataclass
class EvaluateArguments:
    model_dir: str = field(default="models/stance", metadata={"help": "The trained model directory."})
    data: list[str] = field(default_factory=lambda: ["data"], metadata={"help": "Corpus folders or files."})
    split: str = field(default="test", metadata={"help": "train, validation or test (ignored with --file)."})
    file: list[str] | None = field(default=None, metadata={"help": "Evaluate every record of these JSONL/CSV files."})
    name: str | None = field(default=None, metadata={"help": "Report name (default: the split, or 'files')."})
    output_dir: str | None = field(default=None, metadata={"help": "Report folder (default: MODEL_DIR/eval-SPLIT)."})
    crosslingual: bool = field(default=False, metadata={"help": "Also run the train-on-English transfer test."})
    backend: str = field(default="torch", metadata={"help": "torch (the reference), onnx, onnx-int8 or auto."})


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(EvaluateArguments).parse_args_into_dataclasses(args=argv)
    return exit_code(lambda: print(evaluate(args)))


def evaluate(args: EvaluateArguments) -> Path:
    model_dir = Path(args.model_dir)
    config = read_model_config(model_dir)
    name = args.name or ("files" if args.file else args.split)
    if args.file:
        records = [record for path in args.file for record in read_records(Path(path))]
    else:
        splits, _ = load_labelled_splits(args.data, None)
        if args.split not in splits:
            raise StanceError(f"unknown split {args.split!r}: use train, validation or test")
        records = splits[args.split]
    out = Path(args.output_dir) if args.output_dir else model_dir / f"eval-{name}"
    out.mkdir(parents=True, exist_ok=True)
    report = evaluate_records(model_dir, records, figures_dir=out, name=name, backend=args.backend)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report_markdown(report, f"{name} ({model_dir})"), encoding="utf-8")
    print(report_markdown(report, name))
    if args.crosslingual:
        crosslingual(model_dir, config, args.data)
    return out


def crosslingual(model_dir: Path, config: dict, data: list[str]) -> dict:
    """Train the model's configuration on English only; score the test split per language."""
    training = TrainArguments(**config["training"])
    with tempfile.TemporaryDirectory(prefix="stance-crosslingual-") as tmp:
        english = replace(training, data=data, train_languages=["en"], output_dir=f"{tmp}/en", evaluate_test=False)
        english_dir = train(english)
        splits, _ = load_labelled_splits(data, None)
        report = evaluate_records(english_dir, splits["test"])
    (model_dir / "crosslingual.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_model_card(model_dir)
    print(report_markdown(report, "cross-lingual: trained on English only, test split"))
    return report


if __name__ == "__main__":
    sys.exit(main())
