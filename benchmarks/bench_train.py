"""Full training on the bundled corpus with default settings: wall time and peak memory.

    python benchmarks/bench_train.py [--output_dir /tmp/stance-bench-model] [train.py flags]

Runs `train/train.py` in a subprocess and reports its wall-clock time and the peak
resident memory of the training process.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    flags = sys.argv[1:] or ["--output_dir", "/tmp/stance-bench-model"]
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "train" / "train.py"), *flags], check=True)
    minutes = (time.perf_counter() - start) / 60
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\ntraining wall time: {minutes:.1f} min; peak memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
