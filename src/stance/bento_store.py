"""The BentoML model store: import a trained model directory so the service can reference it by tag."""

from __future__ import annotations

import shutil
from pathlib import Path

from stance.model import read_model_config


def import_model(model_dir: Path, name: str = "stance") -> str:
    """Copy a trained model directory into the BentoML model store; returns the new tag (`name:version`)."""
    import bentoml

    config = read_model_config(model_dir)
    metadata = {
        "base_model": config.get("base_model"),
        "labels": config["labels"],
        "max_length": config.get("max_length"),
    }
    with bentoml.models.create(name, labels={"project": "stance"}, metadata=metadata) as model:
        shutil.copytree(model_dir, model.path, dirs_exist_ok=True)
    return str(model.tag)
