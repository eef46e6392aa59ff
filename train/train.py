"""Fine-tune a stance model: `python train/train.py [--flags]` (see --help).

Runs on CPU by default; `accelerate launch train/train.py ...` spreads the same run over
several processes or GPUs. Writes one self-describing model directory (encoder,
tokenizer, heads, labels, metrics, model card) to --output_dir.
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from stance.errors import exit_code
from stance.trainer import TrainArguments, train


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(TrainArguments).parse_args_into_dataclasses(args=argv)
    return exit_code(lambda: print(train(args)))


if __name__ == "__main__":
    sys.exit(main())
