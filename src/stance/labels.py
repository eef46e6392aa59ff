"""Label schemas: which labels each head predicts, read from data, never hard-coded in the model.

A label schema maps each head (`claim_type`, `stance`) to its ordered list of labels.
The bundled corpus ships its schema in `data/labels.json`; a user retraining on other
labels supplies their own file, or lets stance infer it from the training data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from stance.errors import StanceError

HEADS = ("claim_type", "stance")
LabelSchema = dict[str, list[str]]


def load_schema(path: Path) -> LabelSchema:
    """Read a label schema from JSON: `{"claim_type": [...], "stance": [...]}`."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise StanceError(f"{path}: cannot read the label schema ({exc.strerror})") from exc
    except ValueError as exc:
        raise StanceError(f"{path}: the label schema is not valid JSON ({exc})") from exc
    return check_schema(raw, source=str(path))


def check_schema(raw: object, source: str = "label schema") -> LabelSchema:
    """Validate a schema: every head present, a list of at least two distinct non-empty strings."""
    if not isinstance(raw, Mapping):
        raise StanceError(f"{source}: expected an object with the keys {', '.join(HEADS)}")
    schema: LabelSchema = {}
    for head in HEADS:
        labels = raw.get(head)
        if (
            not isinstance(labels, list)
            or len(labels) < 2
            or not all(isinstance(label, str) and label.strip() for label in labels)
            or len(set(labels)) != len(labels)
        ):
            raise StanceError(f"{source}: '{head}' must be a list of at least two distinct label names")
        schema[head] = list(labels)
    return schema


def infer_schema(records: Iterable[Mapping[str, object]]) -> LabelSchema:
    """The sorted label values seen in `records`, per head."""
    seen: dict[str, set[str]] = {head: set() for head in HEADS}
    for record in records:
        for head in HEADS:
            seen[head].add(str(record[head]))
    return check_schema({head: sorted(values) for head, values in seen.items()}, source="labels found in the data")
