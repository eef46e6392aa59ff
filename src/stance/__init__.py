"""stance: label every sentence of a news article with a claim type and a stance."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load"]


def load(model_dir, **kwargs):
    """Load a trained model directory as a :class:`stance.predict.Predictor`."""
    from stance.predict import Predictor  # torch and transformers load only when needed

    return Predictor(model_dir, **kwargs)
