"""How the predictor should cut sentences into batches: the cost of one forward pass, and
planned batches against fixed ones.

    python benchmarks/bench_batching.py --model models/stance [--backend onnx-int8] [--repeats 5]

1. Times forward passes of n × L tokens (no tokenizer) and fits
   `time = per_pass + per_token × n × L` by least squares: `per_pass / per_token` is the
   fixed cost of a pass in padded tokens, the `RUN_COST_TOKENS` of `stance.predict`.
   The fit is noisy on a shared 2-core machine, so step 2 checks the choice directly.
2. Labels test sentences in fixed length-sorted chunks of 32 (the old batching) and in
   the batches `stance.predict.plan_batches` plans with several per-pass costs. Once as
   groups of 8 random sentences (what 8 concurrent HTTP requests merge into) and once as
   one long list (what `stance score` passes). Prints sentences/s (medians of repeats,
   interleaved) and the ratio of each plan to the fixed chunks.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
from common import corpus_sentences

from stance.predict import RUN_COST_TOKENS, Predictor, plan_batches


def fixed_batches(lengths: list[int], size: int) -> list[list[int]]:
    """Length-sorted chunks of `size` (the batching before plan_batches)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[start : start + size] for start in range(0, len(order), size)]


def pass_cost(predictor: Predictor, repeats: int) -> tuple[float, float]:
    """Fitted milliseconds per forward pass and per padded token."""
    rows, times = [], []
    for n in (1, 2, 4, 8, 16):
        for length in (16, 32, 48, 64):
            ids = np.full((n, length), 100, np.int64)
            mask = np.ones_like(ids)
            predictor._forward(ids, mask)  # warm-up for this shape
            samples = []
            for _ in range(3 * repeats):
                start = time.perf_counter()
                predictor._forward(ids, mask)
                samples.append((time.perf_counter() - start) * 1000)
            rows.append((1.0, n * length))
            times.append(statistics.median(samples))
    (per_pass, per_token), *_ = np.linalg.lstsq(np.array(rows), np.array(times), rcond=None)
    return float(per_pass), float(per_token)


def rate(predictor: Predictor, ids: list[list[int]], groups: list[list[int]], plan) -> float:
    """Sentences/s over `groups` (each batched on its own by `plan`)."""
    start = time.perf_counter()
    for group in groups:
        for batch in plan([len(ids[i]) for i in group]):
            inputs = predictor.encoder.pad([ids[group[i]] for i in batch])
            predictor._forward(inputs["input_ids"], inputs["attention_mask"])
    return sum(map(len, groups)) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/stance")
    parser.add_argument("--backend", default="onnx-int8")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    predictor = Predictor(args.model, backend=args.backend)
    per_pass, per_token = pass_cost(predictor, args.repeats)
    print(f"backend {predictor.backend}: {per_pass:.2f} ms per pass + {per_token:.4f} ms per padded token")
    print(f"fixed cost of a pass = {per_pass / per_token:.1f} tokens (RUN_COST_TOKENS = {RUN_COST_TOKENS})\n")

    texts = [r["text"] for r in corpus_sentences("test")]
    ids, _ = predictor.encoder.tokenize(texts)
    rng = random.Random(0)
    workloads = {
        "groups of 8 random sentences": [rng.sample(range(len(texts)), 8) for _ in range(100)],
        f"one list of {len(texts)}": [list(range(len(texts)))],
    }
    plans = {"fixed chunks of 32": lambda lengths: fixed_batches(lengths, 32)}
    for cost in sorted({7, 14, 28, 56, RUN_COST_TOKENS}):
        plans[f"planned, pass = {cost} tokens"] = lambda lengths, cost=cost: plan_batches(lengths, 32, cost)
    print("| workload | " + " | ".join(plans) + " |")
    print("|---" * (len(plans) + 1) + "|")
    for name, groups in workloads.items():
        rates: dict[str, list[float]] = {plan: [] for plan in plans}
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits every plan alike
            for plan, function in plans.items():
                rates[plan].append(rate(predictor, ids, groups, function))
        medians = [statistics.median(rates[plan]) for plan in plans]
        cells = [f"{medians[0]:.0f}"] + [f"{m:.0f} ({m / medians[0]:.2f}×)" for m in medians[1:]]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
