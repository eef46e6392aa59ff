"""The predictor: sentences in, both labels with probabilities out. The one inference path.

The HTTP service, `stance predict` and `stance score` are thin shells over
:class:`Predictor`; evaluation uses it too, so what is measured is what is served.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from stance.errors import StanceError
from stance.labels import HEADS
from stance.model import StanceModel


@dataclass
class HeadPrediction:
    """One head's answer: the top label and every label's probability."""

    label: str
    probabilities: dict[str, float]

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]


@dataclass
class Prediction:
    """Both labels for one sentence; `truncated` when the sentence exceeded the model's max length."""

    text: str
    claim_type: HeadPrediction
    stance: HeadPrediction
    truncated: bool

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "claim_type": {"label": self.claim_type.label, "probabilities": self.claim_type.probabilities},
            "stance": {"label": self.stance.label, "probabilities": self.stance.probabilities},
            "truncated": self.truncated,
        }


class Predictor:
    """A loaded model directory, ready to label sentences in length-sorted batches."""

    def __init__(self, model_dir: Path | str, batch_size: int = 32, num_threads: int | None = None) -> None:
        from transformers import AutoTokenizer

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise StanceError(f"{model_dir}: no such model directory; train one with train/train.py")
        if num_threads or not torch.get_num_threads():
            torch.set_num_threads(num_threads or os.cpu_count() or 1)
        self.model_dir = model_dir
        self.model, self.config = StanceModel.from_dir(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.labels = self.config["labels"]
        self.prefix = self.config.get("input_prefix", "")
        self.max_length = int(self.config.get("max_length", 128))
        self.batch_size = batch_size

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Label every text; the output is in input order whatever the batching did."""
        if isinstance(texts, str):
            raise TypeError("predict() takes a list of sentences, not one string")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list[Prediction | None] = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for index, prediction in zip(batch, self._predict_batch([texts[i] for i in batch]), strict=True):
                results[index] = prediction
        return results  # type: ignore[return-value]

    def probabilities(self, texts: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[bool]]:
        """Per-head probability matrices (rows in input order) and truncation flags for one batch."""
        encoded = self.encode(texts)
        truncated = encoded.pop("truncated")
        with torch.inference_mode():
            outputs = self.model(**encoded)
        return {head: outputs[f"{head}_logits"].softmax(dim=-1) for head in HEADS}, truncated

    def encode(self, texts: Sequence[str]) -> dict:
        """Tokenize with the model's prefix, truncate to its max length, pad; flags truncated rows.

        One tokenizer pass: overflowing pieces reveal truncation and are then dropped.
        """
        encoded = self.tokenizer(
            [self.prefix + text for text in texts],
            truncation=True,
            max_length=self.max_length,
            return_overflowing_tokens=True,
        )
        rows_of: dict[int, list[int]] = {}
        for row, sample in enumerate(encoded["overflow_to_sample_mapping"]):
            rows_of.setdefault(sample, []).append(row)
        first = [rows_of[i][0] for i in range(len(texts))]
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in encoded]
        batch = self.tokenizer.pad({n: [encoded[n][r] for r in first] for n in names}, return_tensors="pt")
        return {**batch, "truncated": [len(rows_of[i]) > 1 for i in range(len(texts))]}

    def _predict_batch(self, texts: list[str]) -> list[Prediction]:
        probs, truncated = self.probabilities(texts)
        predictions = []
        for row, text in enumerate(texts):
            heads = {}
            for head in HEADS:
                values = probs[head][row].tolist()
                labels = self.labels[head]
                best = max(range(len(values)), key=values.__getitem__)
                rounded = {label: round(value, 6) for label, value in zip(labels, values, strict=True)}
                heads[head] = HeadPrediction(labels[best], rounded)
            predictions.append(Prediction(text, heads["claim_type"], heads["stance"], truncated[row]))
        return predictions
