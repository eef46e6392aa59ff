"""Inference backends side by side, in one process: torch fp32, ONNX fp32, ONNX int8.

    python benchmarks/bench_backends.py --model models/stance [--sentences 800] [--repeats 3]

For each backend: batch-scoring throughput (sentences/s over the test split, batches of
32 sorted by length) and single-sentence latency (p50), as medians over repeats and as
ratios to torch fp32 measured in the same run; achieved GFLOP/s (encoder matmul FLOPs
of the real token counts) against the machine's measured peak (timed 2048² fp32
matmuls with torch and numpy, the best of several).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import corpus_sentences, percentile

from stance.predict import Predictor


def peak_gflops(size: int = 2048, repeats: int = 10) -> dict[str, float]:
    """The machine's fp32 matmul rate with all cores, by torch's BLAS and by numpy's (OpenBLAS).

    The faster of the two is the practical peak: on AMD CPUs torch's BLAS can be far
    below the hardware, which is also why torch inference is slow there.
    """
    torch.set_num_threads(os.cpu_count() or 1)
    rates = {}
    for name, make, matmul in (
        ("torch", lambda: torch.randn(size, size), torch.matmul),
        ("numpy", lambda: np.random.default_rng(0).standard_normal((size, size), dtype=np.float32), np.matmul),
    ):
        a, b = make(), make()
        matmul(a, b)
        best = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a, b)
            best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
        rates[name] = best
    return rates


def encoder_flops(config: dict, lengths: list[int]) -> float:
    """Multiply-add FLOPs of a BERT encoder (projections, FFN, attention) over sequences of `lengths`."""
    hidden, ff, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    total = 0.0
    for n in lengths:
        dense = 2 * n * (4 * hidden * hidden + 2 * hidden * ff)
        attention = 2 * 2 * n * n * hidden
        total += layers * (dense + attention)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/stance")
    parser.add_argument("--sentences", type=int, default=800)
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="Also write the results here.")
    args = parser.parse_args()

    texts = [r["text"] for r in corpus_sentences("test")][: args.sentences]
    config = json.loads((Path(args.model) / "config.json").read_text())
    peaks = peak_gflops()
    peak = max(peaks.values())
    results = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        predictor = Predictor(args.model, backend=backend, batch_size=32)
        lengths = [len(row) for row in predictor.encoder.tokenize(texts)[0]]
        flops = encoder_flops(config, lengths)
        predictor.predict(texts[:64])  # warm-up
        throughput = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            predictor.predict(texts)
            throughput.append(len(texts) / (time.perf_counter() - start))
        latencies = []
        for text in texts[: args.latency_samples]:
            start = time.perf_counter()
            predictor.predict([text])
            latencies.append((time.perf_counter() - start) * 1000)
        rate = statistics.median(throughput)
        results[backend] = {
            "sentences_per_s": rate,
            "p50_latency_ms": percentile(latencies, 50),
            "gflops": flops * rate / len(texts) / 1e9,
        }
    base = results["torch"]
    print(
        f"machine: {os.cpu_count()} cores; fp32 2048² matmul: torch {peaks['torch']:.0f}, numpy {peaks['numpy']:.0f} "
        f"GFLOP/s (peak = the faster); {len(texts)} test sentences, mean {np.mean(lengths):.1f} tokens; "
        f"medians of {args.repeats} runs; int8 GFLOP/s count the same fp32-equivalent operations\n"
    )
    print("| backend | sentences/s | × torch | p50 latency (ms) | × torch | GFLOP/s | % of peak |")
    print("|---|---|---|---|---|---|---|")
    for backend, r in results.items():
        print(
            f"| {backend} | {r['sentences_per_s']:.0f} | {r['sentences_per_s'] / base['sentences_per_s']:.2f} | "
            f"{r['p50_latency_ms']:.1f} | {base['p50_latency_ms'] / r['p50_latency_ms']:.2f} | "
            f"{r['gflops']:.0f} | {100 * r['gflops'] / peak:.0f}% |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_gflops": peaks, "results": results}, indent=2))


if __name__ == "__main__":
    main()
