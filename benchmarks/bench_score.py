"""Batch scoring end to end (read, split, score, write) and its memory as the archive grows.

    python benchmarks/bench_score.py --model models/stance [--articles 2000] [--memory 1000,10000]

Runs `stance score` in a subprocess on synthetic archives built from corpus sentences
and reports sentences/s end to end (median of repeats), then the peak resident memory of
runs over archives of different sizes (flat memory: the archive is streamed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_archive


def score_command(archive: Path, model: str, backend: str, out: Path) -> list[str]:
    """The `stance score` command line every measurement runs."""
    stance = str(Path(sys.executable).with_name("stance"))
    return [
        stance,
        "score",
        str(archive),
        "-o",
        str(out),
        "--model",
        model,
        "--backend",
        backend,
        "--quiet",
        "--overwrite",
    ]


def run_score(archive: Path, model: str, backend: str, out: Path) -> tuple[float, int]:
    """Seconds and sentences scored of one `stance score` run."""
    start = time.perf_counter()
    subprocess.run(score_command(archive, model, backend, out), check=True)
    seconds = time.perf_counter() - start
    with open(out, encoding="utf-8") as handle:
        return seconds, sum(1 for _ in handle)


def peak_rss_of_fresh_process(archive: Path, model: str, backend: str, out: Path) -> int:
    """Peak RSS (kB) measured in a fresh interpreter, so runs do not share the children's maximum."""
    code = (
        "import json,resource,subprocess,sys;"
        "subprocess.run(json.loads(sys.argv[1]),check=True);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    command = json.dumps(score_command(archive, model, backend, out))
    result = subprocess.run([sys.executable, "-c", code, command], capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/stance")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", default="1000,10000", help="Archive sizes for the memory comparison.")
    parser.add_argument("--memory-sentences", type=int, default=2, help="Sentences per article in those archives.")
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stance-bench-") as tmp:
        archive = write_archive(Path(tmp) / "archive.jsonl", args.articles)
        rates = []
        for _ in range(args.repeats):
            seconds, sentences = run_score(archive, args.model, args.backend, Path(tmp) / "out.jsonl")
            rates.append(sentences / seconds)
        memory = {}
        for size in (int(x) for x in args.memory.split(",") if x):
            per = (args.memory_sentences, args.memory_sentences)
            sized = write_archive(Path(tmp) / f"archive-{size}.jsonl", size, sentences=per)
            memory[size] = peak_rss_of_fresh_process(sized, args.model, args.backend, Path(tmp) / f"out-{size}.jsonl")
    print(f"model {args.model}, backend {args.backend}, {args.articles} articles ({sentences} sentences)\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| end-to-end sentences/s (median of {args.repeats}, incl. start-up) | {statistics.median(rates):.0f} |")
    for size, kb in memory.items():
        print(f"| peak memory, {size} articles of {args.memory_sentences} sentences | {kb / 1024:.0f} MB |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rates": rates, "memory_kb": memory}, indent=2))


if __name__ == "__main__":
    main()
