"""The HTTP service under load, on 127.0.0.1: cold start, single-sentence latency, 8 concurrent clients.

    python benchmarks/bench_service.py --model models/stance [--backend auto] [--repeats 3]

Starts `stance serve` as users do, measures the time to /readyz (cold start), the p50
latency of one-sentence /classify requests sent one after another, and the throughput
and p95 latency of 8 concurrent clients sending one-sentence requests (merged by
BentoML's adaptive batching). Medians over repeats. All traffic stays on 127.0.0.1 and
every loop is bounded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import corpus_sentences, free_port, percentile, wait_ready


def start(model: str, backend: str) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    env = dict(os.environ, STANCE_BACKEND=backend, BENTOML_DO_NOT_TRACK="True")
    stance = str(Path(sys.executable).with_name("stance"))
    started = time.monotonic()
    process = subprocess.Popen(
        [stance, "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process)
    return process, url, time.monotonic() - started


def classify(client: httpx.Client, url: str, sentence: str) -> float:
    start = time.perf_counter()
    response = client.post(f"{url}/classify", json={"sentences": [sentence]}, timeout=30)
    response.raise_for_status()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/stance")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=60)
    args = parser.parse_args()
    sentences = [r["text"] for r in corpus_sentences("test")]

    cold, p50s, rates, p95s = [], [], [], []
    for _ in range(args.repeats):
        process, url, seconds = start(args.model, args.backend)
        cold.append(seconds)
        try:
            with httpx.Client() as client:
                for sentence in sentences[:20]:  # warm-up
                    classify(client, url, sentence)
                latencies = [classify(client, url, s) for s in sentences[: args.sequential]]
            p50s.append(percentile(latencies, 50))

            def client_run(offset: int, url: str = url) -> list[float]:
                with httpx.Client() as client:
                    return [
                        classify(client, url, sentences[(offset * args.per_client + i) % len(sentences)])
                        for i in range(args.per_client)
                    ]

            begin = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(client_run, range(args.clients)))
            elapsed = time.perf_counter() - begin
            all_latencies = [x for r in results for x in r]
            rates.append(len(all_latencies) / elapsed)
            p95s.append(percentile(all_latencies, 95))
        finally:
            process.terminate()
            process.wait(timeout=30)

    print(f"model {args.model}, backend {args.backend}, {os.cpu_count()} cores, medians of {args.repeats} runs\n")
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| cold start to /readyz | {statistics.median(cold):.1f} s | ≤ 15 s |")
    print(f"| single-sentence /classify p50 | {statistics.median(p50s):.1f} ms | ≤ 30 ms |")
    print(f"| {args.clients} concurrent clients: sentences/s | {statistics.median(rates):.0f} | ≥ 120 |")
    print(f"| {args.clients} concurrent clients: p95 latency | {statistics.median(p95s):.0f} ms | ≤ 250 ms |")


if __name__ == "__main__":
    main()
