"""The predictor: sentences in, both labels with probabilities out. The one inference path.

The HTTP service, `stance predict` and `stance score` are thin shells over
:class:`Predictor`; evaluation uses it too, so what is measured is what is served.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stance.errors import StanceError
from stance.labels import HEADS
from stance.model import read_model_config

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


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


def default_backend(model_dir: Path) -> str:
    """The fastest backend whose parity with torch was measured and holds on every split checked:
    the split that ranked the int8 recipes and the reported ones that gated them (see `stance export-onnx`)."""
    from stance.onnx_export import FP32_FILE, INT8_FILE, REPORT_FILE

    report_path = Path(model_dir) / REPORT_FILE
    if not report_path.is_file():
        return "torch"
    report = json.loads(report_path.read_text(encoding="utf-8"))
    checked = [report, *report.get("reported", {}).values()]
    if all(r.get("int8_can_be_default") for r in checked) and (Path(model_dir) / INT8_FILE).is_file():
        return "onnx-int8"
    if all(r.get("fp32_matches") for r in checked) and (Path(model_dir) / FP32_FILE).is_file():
        return "onnx"
    return "torch"


class Encoder:
    """A model directory's tokenizer with the model's input prefix and max length."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoTokenizer

        config = read_model_config(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.prefix = config.get("input_prefix", "")
        self.max_length = int(config.get("max_length", 128))

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids of each text with the model's prefix, truncated to its max length and unpadded,
        and whether each was truncated.

        One tokenizer pass: overflowing pieces reveal truncation and are then dropped.
        """
        encoded = self.tokenizer(
            [self.prefix + text for text in texts],
            truncation=True,
            max_length=self.max_length,
            return_overflowing_tokens=True,
            return_attention_mask=False,
        )
        rows_of: dict[int, list[int]] = {}
        for row, sample in enumerate(encoded["overflow_to_sample_mapping"]):
            rows_of.setdefault(sample, []).append(row)
        ids = [encoded["input_ids"][rows_of[i][0]] for i in range(len(texts))]
        return ids, [len(rows_of[i]) > 1 for i in range(len(texts))]

    def pad(self, ids: Sequence[list[int]]) -> dict[str, np.ndarray]:
        """One batch of token ids padded to its longest row: `input_ids` and `attention_mask`."""
        batch = self.tokenizer.pad(
            {"input_ids": list(ids), "attention_mask": [[1] * len(row) for row in ids]}, return_tensors="np"
        )
        return {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}

    def encode(self, texts: Sequence[str]) -> dict:
        """Tokenize (see :meth:`tokenize`) and pad `texts` as one batch; `truncated` flags the cut rows."""
        ids, truncated = self.tokenize(texts)
        return {**self.pad(ids), "truncated": truncated}


# The fixed cost of one forward pass, in padded tokens. `python benchmarks/bench_batching.py`
# tries 7, 14, 28 and 56 with the int8 graph on a 2-core CPU. Against fixed chunks of 32, 28 gave
# 1.32× and 1.23× (two models) on groups of 8 random sentences, where 7 and 14 gain less; on one
# long list every choice is within a few percent of fixed chunks.
RUN_COST_TOKENS = 28


def plan_batches(lengths: Sequence[int], max_batch: int, run_cost: int = RUN_COST_TOKENS) -> list[list[int]]:
    """Group indices into batches of at most `max_batch` that minimize padded tokens plus `run_cost` per batch.

    Padding is paid for: a batch costs its size times its longest row. Sorted by length, the
    best batches are contiguous runs, and dynamic programming finds the cut points in
    O(n × max_batch). A mixed batch of short and long sentences (what concurrent HTTP
    requests bring) is cut in two or three; a long list is cut where the length steps up,
    into batches of one or two dozen.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    cost = [0.0] + [float("inf")] * len(order)
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = lengths[order[end - 1]]
        for start in range(max(0, end - max_batch), end):
            candidate = cost[start] + run_cost + (end - start) * longest
            if candidate < cost[end]:
                cost[end], cut[end] = candidate, start
    batches, end = [], len(order)
    while end:
        batches.append(order[cut[end] : end])
        end = cut[end]
    return batches[::-1]


class Predictor:
    """A loaded model directory, ready to label sentences in batches planned by length (`plan_batches`).

    `backend` is `torch`, `onnx` (fp32 graph), `onnx-int8`, or `auto`: the fastest
    backend whose parity with torch holds, as recorded by `stance export-onnx`.
    `num_threads` defaults to the machine's cores.
    """

    def __init__(
        self, model_dir: Path | str, batch_size: int = 32, num_threads: int | None = None, backend: str = "auto"
    ) -> None:
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise StanceError(f"{model_dir}: no such model directory; train one with train/train.py")
        if backend not in BACKENDS:
            raise StanceError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
        self.model_dir = model_dir
        self.config = read_model_config(model_dir)
        self.backend = default_backend(model_dir) if backend == "auto" else backend
        threads = num_threads or os.cpu_count() or 1
        self._forward = self._torch_forward(threads) if self.backend == "torch" else self._onnx_forward(threads)
        self.encoder = Encoder(model_dir)
        self.labels = self.config["labels"]
        self.batch_size = batch_size

    def _torch_forward(self, threads: int):
        import torch

        from stance.model import StanceModel

        torch.set_num_threads(threads)
        model, _ = StanceModel.from_dir(self.model_dir)

        def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
            with torch.inference_mode():
                outputs = model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
            return {head: outputs[f"{head}_logits"].softmax(dim=-1).numpy() for head in HEADS}

        return forward

    def _onnx_forward(self, threads: int):
        import onnxruntime as ort

        from stance.onnx_export import FP32_FILE, INT8_FILE

        path = self.model_dir / (INT8_FILE if self.backend == "onnx-int8" else FP32_FILE)
        if not path.is_file():
            raise StanceError(f"{path} is missing: run `stance export-onnx {self.model_dir}` first")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # one pool the size of the machine; no nested pools
        options.inter_op_num_threads = 1
        # Idle pool threads would spin on the cores the tokenizer and the HTTP server need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
            outputs = session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
            return dict(zip(HEADS, outputs, strict=True))

        return forward

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Label every text; the output is in input order whatever the batching did."""
        results: list[Prediction | None] = [None] * len(texts)
        for batch, probabilities, truncated in self._batched_probabilities(texts):
            for row, index in enumerate(batch):
                results[index] = self._prediction(texts[index], probabilities, row, truncated[row])
        return results  # type: ignore[return-value]

    def probability_matrices(self, texts: Sequence[str], batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Unrounded per-head probabilities (rows in input order), batched exactly as `predict` does
        (or with batches of at most `batch_size`)."""
        matrices = {head: np.zeros((len(texts), len(self.labels[head])), np.float32) for head in HEADS}
        for batch, probabilities, _ in self._batched_probabilities(texts, batch_size):
            for head in HEADS:
                matrices[head][batch] = probabilities[head]
        return matrices

    def _batched_probabilities(
        self, texts: Sequence[str], batch_size: int | None = None
    ) -> Iterator[tuple[list[int], dict[str, np.ndarray], list[bool]]]:
        """Tokenize once, plan batches by token length, and run each: (indices, probabilities, truncated)."""
        if isinstance(texts, str):
            raise TypeError("predict() takes a list of sentences, not one string")
        ids, truncated = self.encoder.tokenize(texts) if texts else ([], [])
        for batch in plan_batches([len(row) for row in ids], batch_size or self.batch_size):
            inputs = self.encoder.pad([ids[i] for i in batch])
            yield batch, self._forward(inputs["input_ids"], inputs["attention_mask"]), [truncated[i] for i in batch]

    def _prediction(self, text: str, probabilities: dict[str, np.ndarray], row: int, truncated: bool) -> Prediction:
        heads = {}
        for head in HEADS:
            values = probabilities[head][row].tolist()
            labels = self.labels[head]
            best = max(range(len(values)), key=values.__getitem__)
            rounded = {label: round(value, 6) for label, value in zip(labels, values, strict=True)}
            heads[head] = HeadPrediction(labels[best], rounded)
        return Prediction(text, heads["claim_type"], heads["stance"], truncated)
