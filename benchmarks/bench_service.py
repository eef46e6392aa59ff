"""The HTTP service under load, on 127.0.0.1: cold start, single-sentence latency, 8 concurrent clients.

    python benchmarks/bench_service.py --model models/stance [--backend auto] [--repeats 3] [--load auto]

Starts `stance serve` as users do, measures the time to /readyz (cold start), the p50
latency of one-sentence /classify requests sent one after another, and the throughput
and p95 latency of 8 concurrent clients sending one-sentence requests (merged by
BentoML's adaptive batching). Medians over repeats. All traffic stays on 127.0.0.1 and
every loop is bounded.

The 8 clients are either 8 Python threads (`--load httpx`) or 8 connections of `wrk`
(`--load wrk`; Debian/Ubuntu: `apt-get install wrk`). On a 2-core machine the load
generator competes with the server for the cores; wrk, in C, takes far less of them, so
it measures the server more than the client. `auto` uses wrk when it is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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


# wrk script: one-sentence /classify bodies read from a file, cycled; prints a JSON summary.
WRK_SCRIPT = """
local bodies, i = {}, 0
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
end
function request()
  i = i % #bodies + 1
  return wrk.format("POST", "/classify", {["Content-Type"] = "application/json"}, bodies[i])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "seconds": %f, "p95_ms": %f, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(95) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def httpx_load(url: str, sentences: list[str], clients: int, per_client: int) -> tuple[float, float]:
    """Sentences/s and p95 latency (ms) of `clients` threads each sending `per_client` requests."""

    def client_run(offset: int) -> list[float]:
        with httpx.Client() as client:
            return [
                classify(client, url, sentences[(offset * per_client + i) % len(sentences)]) for i in range(per_client)
            ]

    begin = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client_run, range(clients)))
    elapsed = time.perf_counter() - begin
    latencies = [x for r in results for x in r]
    return len(latencies) / elapsed, percentile(latencies, 95)


def wrk_load(url: str, sentences: list[str], clients: int, seconds: int) -> tuple[float, float]:
    """Sentences/s and p95 latency (ms) of `clients` wrk connections for `seconds`."""
    with tempfile.TemporaryDirectory() as folder:
        script, bodies = Path(folder) / "classify.lua", Path(folder) / "bodies.jsonl"
        script.write_text(WRK_SCRIPT)
        bodies.write_text("".join(json.dumps({"sentences": [s]}) + "\n" for s in sentences))
        command = ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), url]
        output = subprocess.run([*command, "--", str(bodies)], capture_output=True, text=True, check=True).stdout
    result = json.loads(output.split("RESULT ", 1)[1].splitlines()[0])
    if result["errors"]:
        raise SystemExit(f"wrk saw {result['errors']} failed requests:\n{output}")
    return result["requests"] / result["seconds"], result["p95_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/stance")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=60, help="Requests per client (httpx load).")
    parser.add_argument("--seconds", type=int, default=20, help="Duration of the wrk load.")
    parser.add_argument("--load", choices=["auto", "httpx", "wrk"], default="auto", help="Load generator.")
    args = parser.parse_args()
    load = args.load if args.load != "auto" else ("wrk" if shutil.which("wrk") else "httpx")
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

            if load == "wrk":
                rate, p95 = wrk_load(url, sentences, args.clients, args.seconds)
            else:
                rate, p95 = httpx_load(url, sentences, args.clients, args.per_client)
            rates.append(rate)
            p95s.append(p95)
        finally:
            process.terminate()
            process.wait(timeout=30)

    print(
        f"model {args.model}, backend {args.backend}, {os.cpu_count()} cores, load generator {load}, "
        f"medians of {args.repeats} runs\n"
    )
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| cold start to /readyz | {statistics.median(cold):.1f} s | ≤ 15 s |")
    print(f"| single-sentence /classify p50 | {statistics.median(p50s):.1f} ms | ≤ 30 ms |")
    print(f"| {args.clients} concurrent clients: sentences/s | {statistics.median(rates):.0f} | ≥ 120 |")
    print(f"| {args.clients} concurrent clients: p95 latency | {statistics.median(p95s):.0f} ms | ≤ 250 ms |")
    print(f"\nsentences/s of each run: {', '.join(f'{rate:.0f}' for rate in rates)}")


if __name__ == "__main__":
    main()
