"""Fine-tuning: corpus → datasets → transformers Trainer → one model directory.

`train/train.py` parses :class:`TrainArguments` from the command line and calls
:func:`train`; `accelerate launch train/train.py ...` runs the same code on several
processes or GPUs, since transformers' Trainer runs on accelerate.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stance.base_model import DEFAULT_BASE_MODEL, PROVENANCE_FILE, resolve_base_model
from stance.data import Record, load_labelled_splits
from stance.errors import StanceError
from stance.labels import HEADS, LabelSchema


@dataclass
class TrainArguments:
    """Everything a training run depends on; the defaults train the bundled model."""

    data: list[str] = field(
        default_factory=lambda: ["data"],
        metadata={"help": "Corpus folders (every *.jsonl, plus labels.json) or JSONL/CSV files."},
    )
    labels: str | None = field(
        default=None, metadata={"help": "Label schema JSON; default: labels.json of the data folder, else inferred."}
    )
    output_dir: str = field(default="models/stance", metadata={"help": "Where the model directory is written."})
    base_model: str = field(
        default=DEFAULT_BASE_MODEL, metadata={"help": "Any Hugging Face encoder id or local checkpoint path."}
    )
    input_prefix: str | None = field(
        default=None, metadata={"help": "Text put before every sentence; default 'query: ' for e5 models, else ''."}
    )
    epochs: float = field(default=5.0, metadata={"help": "Training epochs."})
    learning_rate: float = field(default=6e-5, metadata={"help": "Peak learning rate (linear decay, warm-up)."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Share of steps spent warming up."})
    weight_decay: float = field(default=0.01)
    batch_size: int = field(default=16, metadata={"help": "Training batch size per device."})
    eval_batch_size: int = field(default=64)
    max_length: int = field(default=128, metadata={"help": "Longer sentences are truncated (and flagged)."})
    seed: int = field(default=13, metadata={"help": "Seed for initialisation, shuffling and dropout."})
    claim_type_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the claim-type loss."})
    stance_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the stance loss."})
    class_weights: bool = field(
        default=True, metadata={"help": "Weight classes by inverse frequency (balanced) against imbalance."}
    )
    freeze_embeddings: bool = field(
        default=True, metadata={"help": "Freeze the word-embedding matrix (halves step time and memory on CPU)."}
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bfloat16 mixed precision, true or false (weights stay float32). Default: on where the "
            "hardware computes bf16 natively (CPUs with AVX512-BF16 or AMX: about 2x faster steps; "
            "CUDA GPUs with bf16), else off."
        },
    )
    train_languages: list[str] | None = field(
        default=None, metadata={"help": "Train and select on these languages only (e.g. en for a cross-lingual run)."}
    )
    evaluate_test: bool = field(default=True, metadata={"help": "Evaluate the final model on the test split."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (for smoke tests)."})
    logging_steps: int = field(default=25)
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads (default: all cores)."})


def default_prefix(base_model: str, resolved: str) -> str:
    """e5 encoders expect a 'query: '/'passage: ' prefix (query for classification); others get none."""
    if (Path(resolved) / PROVENANCE_FILE).is_file() or re.search(r"(^|[-_/])e5([-_]|$)", base_model.lower()):
        return "query: "
    return ""


def native_bf16() -> bool:
    """Whether this machine computes bfloat16 matmuls in hardware (elsewhere autocast to bf16 is slower)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    # torch has no public query for the CPU's bf16 units, only these private ones (absent: assume none)
    cpu = torch.cpu
    return any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def _to_dataset(records: list[Record], schema: LabelSchema, tokenizer, prefix: str, max_length: int):
    from datasets import Dataset

    dataset = Dataset.from_dict(
        {
            "text": [prefix + str(r["text"]) for r in records],
            **{head: [schema[head].index(str(r[head])) for r in records] for head in HEADS},
        }
    )
    return dataset.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=["text"],
        desc="tokenizing",
    )


def _balanced_weights(records: list[Record], schema: LabelSchema):
    import torch

    weights = {}
    for head in HEADS:
        counts = Counter(str(r[head]) for r in records)
        total, k = len(records), len(schema[head])
        weights[head] = torch.tensor([total / (k * counts[label]) if counts[label] else 0.0 for label in schema[head]])
    return weights


def head_metrics(logits: dict[str, np.ndarray], gold: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy and macro-F1 per head, and their mean macro-F1 (the model-selection metric)."""
    from sklearn.metrics import accuracy_score, f1_score

    metrics = {}
    for head in HEADS:
        predicted = logits[head].argmax(axis=-1)
        metrics[f"{head}_accuracy"] = float(accuracy_score(gold[head], predicted))
        metrics[f"{head}_macro_f1"] = float(f1_score(gold[head], predicted, average="macro"))
    metrics["macro_f1"] = float(np.mean([metrics[f"{head}_macro_f1"] for head in HEADS]))
    return metrics


def train(args: TrainArguments) -> Path:
    """Fine-tune, select the best epoch by validation macro-F1, evaluate, and write the model directory.

    The directory is assembled in a temporary folder next to `output_dir` and renamed
    into place, so an interrupted run never leaves a half-written model.
    """
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from stance.evaluation import evaluate_records
    from stance.model import StanceModel, load_encoder
    from stance.model_card import write_model_card

    started = time.time()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    set_seed(args.seed)
    splits, schema = load_labelled_splits(args.data, args.labels)
    if args.train_languages:
        for name in ("train", "validation"):
            splits[name] = [r for r in splits[name] if r.get("lang") in args.train_languages]
            if not splits[name]:
                raise StanceError(f"no {name} records in the languages {', '.join(args.train_languages)}")
    base = resolve_base_model(args.base_model)
    prefix = default_prefix(args.base_model, base) if args.input_prefix is None else args.input_prefix
    tokenizer = AutoTokenizer.from_pretrained(base)
    encoder = load_encoder(base)
    if args.freeze_embeddings:
        encoder.get_input_embeddings().weight.requires_grad_(False)
    model = StanceModel(
        encoder,
        schema,
        loss_weights={"claim_type": args.claim_type_loss_weight, "stance": args.stance_loss_weight},
        class_weights=_balanced_weights(splits["train"], schema) if args.class_weights else None,
    )
    bf16 = native_bf16() if args.bf16 is None else args.bf16
    datasets = {
        name: _to_dataset(splits[name], schema, tokenizer, prefix, args.max_length) for name in ("train", "validation")
    }

    output = Path(args.output_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        training_args = TrainingArguments(
            output_dir=str(workdir / "checkpoints"),
            num_train_epochs=args.epochs,
            max_steps=args.max_steps,
            learning_rate=args.learning_rate,
            warmup_steps=args.warmup_ratio,
            weight_decay=args.weight_decay,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.eval_batch_size,
            eval_strategy="epoch" if args.max_steps < 0 else "steps",
            save_strategy="epoch" if args.max_steps < 0 else "steps",
            eval_steps=args.max_steps if args.max_steps > 0 else None,
            save_steps=args.max_steps if args.max_steps > 0 else None,
            save_total_limit=1,
            load_best_model_at_end=True,
            metric_for_best_model="macro_f1",
            greater_is_better=True,
            train_sampling_strategy="group_by_length",
            label_names=list(HEADS),
            remove_unused_columns=False,
            logging_steps=args.logging_steps,
            seed=args.seed,
            data_seed=args.seed,
            report_to="none",
            save_only_model=True,
            dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(),
            bf16=bf16,
            # transformers only allows bf16 without a GPU when told the run is on the CPU
            use_cpu=bf16 and not torch.cuda.is_available(),
        )

        def compute_metrics(prediction) -> dict[str, float]:
            logits = dict(zip(HEADS, prediction.predictions, strict=True))
            gold = dict(zip(HEADS, prediction.label_ids, strict=True))
            return head_metrics(logits, gold)

        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=datasets["train"],
            eval_dataset=datasets["validation"],
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
            compute_metrics=compute_metrics,
        )
        trainer.train()
        if not trainer.is_world_process_zero():
            return output
        staging = workdir / "model"
        settings = {
            "input_prefix": prefix,
            "max_length": args.max_length,
            "base_model": args.base_model,
            "training": {**asdict(args), "bf16": bf16},
            "train_size": len(splits["train"]),
        }
        trainer.model.eval()
        trainer.model.save(staging, tokenizer, settings)
        metrics = {"training_seconds": round(time.time() - started, 1)}
        evaluated = ["validation", "test"] if args.evaluate_test and splits["test"] else ["validation"]
        for name in evaluated:
            metrics[name] = evaluate_records(staging, splits[name], figures_dir=staging / "figures", name=name)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        write_model_card(staging)
        _replace_dir(staging, output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return output


def _replace_dir(new: Path, target: Path) -> None:
    """Move `new` to `target`, replacing an existing model directory with as short a gap as possible."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)
