"""Test-wide settings: offline, and temporary stores so tests never touch the user's caches."""

import os
import tempfile
from pathlib import Path

import pytest

# Set before anything imports transformers, datasets or bentoml.
_SCRATCH = Path(tempfile.mkdtemp(prefix="stance-tests-"))
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    BENTOML_DO_NOT_TRACK="True",
    TOKENIZERS_PARALLELISM="false",
    HF_HOME=str(_SCRATCH / "hf"),
    BENTOML_HOME=str(_SCRATCH / "bentoml"),
    STANCE_HOME=str(_SCRATCH / "stance"),
)


@pytest.fixture(scope="session")
def e5_checkpoint() -> Path:
    """The converted multilingual-e5-small, materialized once per test session."""
    from stance.base_model import materialize

    return materialize()
