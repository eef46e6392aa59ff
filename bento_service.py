"""Entry point for `bentoml build` and a built bento: makes `src/` importable, then exposes the service.

In development `stance serve` (or `bentoml serve stance.service:Stance`) needs no shim;
inside a bento the package travels as source under `src/`, and this file points there.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from stance.service import Stance

__all__ = ["Stance"]
