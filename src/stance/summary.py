"""Article summaries: label counts, share of critical sentences, the strongest accusations and denials.

Shared by the HTTP service (`/classify_article`) and batch scoring (`stance score --summary`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from stance.predict import Prediction

TOP_CLAIMS = 3


def summarize(predictions: Sequence[Prediction], labels: dict[str, list[str]], top: int = TOP_CLAIMS) -> dict:
    """Summarize one article's sentence predictions (in article order; indexes refer to that order)."""
    claim_counts = Counter(p.claim_type.label for p in predictions)
    stance_counts = Counter(p.stance.label for p in predictions)

    def strongest(label: str) -> list[dict]:
        if label not in labels["claim_type"]:
            return []
        chosen = [(i, p) for i, p in enumerate(predictions) if p.claim_type.label == label]
        chosen.sort(key=lambda item: -item[1].claim_type.probabilities[label])
        return [{"index": i, "text": p.text, "confidence": p.claim_type.probabilities[label]} for i, p in chosen[:top]]

    return {
        "sentences": len(predictions),
        "claim_types": {label: claim_counts[label] for label in labels["claim_type"]},
        "stances": {label: stance_counts[label] for label in labels["stance"]},
        "critical_share": round(stance_counts["critical"] / len(predictions), 4) if predictions else 0.0,
        "top_accusations": strongest("accusation"),
        "top_denials": strongest("denial"),
    }
