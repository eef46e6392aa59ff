"""The stance model: one shared encoder, mean pooling, two classification heads.

A trained model is one self-describing directory:

    config.json, model.safetensors      the fine-tuned encoder (transformers format)
    tokenizer.json, tokenizer_config.json
    heads.safetensors                   the two linear heads
    stance.json                         label sets, pooling, input prefix, max length, training config
    metrics.json                        evaluation results (written by training/evaluation)
    README.md                           the model card

`StanceModel.from_dir(path)` loads it without any training code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from stance.errors import StanceError
from stance.labels import HEADS, LabelSchema, check_schema

MODEL_CONFIG = "stance.json"
HEADS_FILE = "heads.safetensors"
FORMAT_VERSION = 1


def load_encoder(name_or_path: str):
    """Load a transformers encoder without a pooler (stance mean-pools; a random pooler would only warn)."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(name_or_path)
    try:
        return AutoModel.from_pretrained(name_or_path, config=config, add_pooling_layer=False)
    except TypeError:  # encoders without a pooler do not take the argument
        return AutoModel.from_pretrained(name_or_path, config=config)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors that the attention mask keeps (e5 was trained this way)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class StanceModel(nn.Module):
    """An encoder with a linear head per label set; one forward pass gives both heads' logits."""

    def __init__(
        self,
        encoder: nn.Module,
        schema: LabelSchema,
        dropout: float = 0.1,
        loss_weights: dict[str, float] | None = None,
        class_weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.schema = check_schema(schema)
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({head: nn.Linear(hidden, len(labels)) for head, labels in self.schema.items()})
        self.loss_weights = loss_weights or dict.fromkeys(HEADS, 1.0)
        for head in HEADS:
            weight = (class_weights or {}).get(head)
            self.register_buffer(f"class_weight_{head}", weight, persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        **labels: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Logits per head (`{head}_logits`); with label tensors given, also the weighted `loss`."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        pooled = self.dropout(mean_pool(self.encoder(**inputs).last_hidden_state, attention_mask))
        outputs = {f"{head}_logits": layer(pooled) for head, layer in self.heads.items()}
        if all(head in labels for head in HEADS):
            outputs = {
                "loss": sum(
                    self.loss_weights[head]
                    * nn.functional.cross_entropy(
                        outputs[f"{head}_logits"], labels[head], weight=getattr(self, f"class_weight_{head}")
                    )
                    for head in HEADS
                ),
                **outputs,
            }
        return outputs

    def save(self, folder: Path, tokenizer, settings: dict) -> None:
        """Write encoder, tokenizer, heads and `stance.json` into `folder`."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        save_file({k: v.detach().contiguous() for k, v in self.heads.state_dict().items()}, str(folder / HEADS_FILE))
        config = {"format_version": FORMAT_VERSION, "labels": self.schema, "pooling": "mean", **settings}
        (folder / MODEL_CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for path in folder.iterdir():  # safetensors writes owner-only files; a model is meant to be shared
            if path.is_file():
                path.chmod(0o644)

    @classmethod
    def from_dir(cls, folder: Path) -> tuple[StanceModel, dict]:
        """Load a trained model directory; returns the model (in eval mode) and its `stance.json`."""
        from safetensors.torch import load_file

        config = read_model_config(folder)
        model = cls(load_encoder(str(folder)), config["labels"])
        model.heads.load_state_dict(load_file(str(Path(folder) / HEADS_FILE)))
        return model.eval(), config


def read_model_config(folder: Path) -> dict:
    """Read and check a model directory's `stance.json`, with a clear error if it is not one."""
    path = Path(folder) / MODEL_CONFIG
    if not path.is_file():
        raise StanceError(f"{folder} is not a stance model directory (no {MODEL_CONFIG}): run train/train.py")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise StanceError(f"{path}: not valid JSON ({exc})") from exc
    if config.get("format_version") != FORMAT_VERSION:
        raise StanceError(f"{path}: format_version {config.get('format_version')} is not {FORMAT_VERSION}")
    config["labels"] = check_schema(config.get("labels"), source=str(path))
    return config
