"""Export a trained model directory to ONNX (fp32 and int8) and check that it says the same.

`stance export-onnx MODEL_DIR` writes into the model directory:

    model.onnx        encoder + mean pooling + both heads + softmax, dynamic batch and length
    model-int8.onnx   the same, weights quantized to int8 (onnxruntime dynamic quantization)
    onnx.json         parity of each against torch on a parity set, and whether int8 may be the default

The export uses `torch.onnx.export(..., dynamo=True)`: optimum does not support
transformers 5.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stance.labels import HEADS

FP32_FILE = "model.onnx"
INT8_FILE = "model-int8.onnx"
REPORT_FILE = "onnx.json"
# int8 may become the default backend only within these bounds (issue #7).
INT8_MIN_LABEL_AGREEMENT = 0.99
INT8_MAX_F1_DROP = 0.005
FP32_MAX_ABS_DIFF = 1e-4


class _ProbabilityGraph(nn.Module):
    """What goes into the ONNX graph: ids and mask in, one probability matrix per head out."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return tuple(outputs[f"{head}_logits"].softmax(dim=-1) for head in HEADS)


def export(model_dir: Path) -> tuple[Path, Path]:
    """Write the fp32 and int8 ONNX graphs of `model_dir` next to its weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from stance.model import StanceModel

    model_dir = Path(model_dir)
    model, _ = StanceModel.from_dir(model_dir)
    graph = _ProbabilityGraph(model.eval())
    example = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
    batch, length = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("length", min=2, max=4096)
    fp32 = model_dir / FP32_FILE
    with torch.no_grad():
        program = torch.onnx.export(
            graph,
            example,
            input_names=["input_ids", "attention_mask"],
            output_names=[f"{head}_probabilities" for head in HEADS],
            dynamic_shapes={"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}},
            dynamo=True,
            external_data=False,
        )
    program.save(str(fp32))
    int8 = model_dir / INT8_FILE
    config = model.encoder.config
    quantize_dynamic(
        str(fp32),
        str(int8),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gather"],
        nodes_to_exclude=_kept_in_fp32(fp32, config.intermediate_size, config.hidden_size),
    )
    return fp32, int8


def _kept_in_fp32(path: Path, intermediate: int, hidden: int) -> list[str]:
    """MatMuls left in fp32: attention's activation × activation products and both
    feed-forward projections (hidden → intermediate → hidden); the attention projections
    are int8.

    Measured on the default model's test split (825 sentences), labels agreeing with torch:
    every MatMul int8, 94.8% / 97.1% (claim type / stance); FFN output kept fp32, 98.4% /
    98.2%; both FFN projections kept fp32, 99.0% / 99.8% with macro-F1 within 0.3 points —
    the only variant that passes the bar for becoming the default, at 1.3× fp32 speed.
    Per-tensor uint8 activations cannot represent the outliers of the FFN's inputs.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and (
            not any(name in shapes for name in node.input)
            or any(shapes.get(name) in ((intermediate, hidden), (hidden, intermediate)) for name in node.input)
        )
    ]


def parity(model_dir: Path, texts: Sequence[str], gold: dict[str, Sequence[str]] | None = None) -> dict:
    """Compare the ONNX backends with torch on `texts`: max abs probability difference,
    label agreement, and (with gold labels) macro-F1 per head."""
    from sklearn.metrics import f1_score

    from stance.predict import Predictor

    results: dict = {"n": len(texts)}
    probabilities = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        predictor = Predictor(model_dir, backend=backend)
        batches = [predictor.probabilities(texts[i : i + 64])[0] for i in range(0, len(texts), 64)]
        probabilities[backend] = {head: np.concatenate([b[head] for b in batches]) for head in HEADS}
        labels = predictor.labels
    for backend in ("onnx", "onnx-int8"):
        report: dict = {}
        for head in HEADS:
            ours, reference = probabilities[backend][head], probabilities["torch"][head]
            entry = {
                "max_abs_diff": float(np.abs(ours - reference).max()),
                "label_agreement": float((ours.argmax(1) == reference.argmax(1)).mean()),
            }
            if gold is not None:
                names = np.array(labels[head])
                entry["macro_f1"] = float(f1_score(gold[head], names[ours.argmax(1)], average="macro"))
                entry["torch_macro_f1"] = float(f1_score(gold[head], names[reference.argmax(1)], average="macro"))
            report[head] = entry
        results[backend] = report
    int8 = results["onnx-int8"]
    results["int8_can_be_default"] = all(
        int8[h]["label_agreement"] >= INT8_MIN_LABEL_AGREEMENT
        and (gold is None or int8[h]["torch_macro_f1"] - int8[h]["macro_f1"] <= INT8_MAX_F1_DROP)
        for h in HEADS
    )
    results["fp32_matches"] = all(
        results["onnx"][h]["max_abs_diff"] <= FP32_MAX_ABS_DIFF and results["onnx"][h]["label_agreement"] == 1.0
        for h in HEADS
    )
    return results


def export_and_check(model_dir: Path, texts: Sequence[str], gold: dict[str, Sequence[str]] | None) -> dict:
    """Export both graphs, measure parity, record it in `onnx.json` and the model card."""
    from stance.model_card import write_model_card

    export(model_dir)
    report = parity(model_dir, texts, gold)
    (Path(model_dir) / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_model_card(model_dir)
    return report
