"""Helpers shared by the benchmark scripts: test sentences, synthetic archives, a server, percentiles."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def corpus_sentences(split: str | None = None) -> list[dict]:
    """Sentences of the bundled corpus (optionally one split)."""
    records = []
    for name in ("seed.jsonl", "corpus.jsonl"):
        for line in (REPO / "data" / name).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if split is None or record["split"] == split:
                records.append(record)
    return records


def write_archive(path: Path, articles: int, seed: int = 0, sentences: tuple[int, int] = (5, 15)) -> Path:
    """A JSONL archive of `articles` articles, each of 5–15 (or `sentences`) corpus sentences of one language."""
    rng = random.Random(seed)
    by_lang: dict[str, list[str]] = {}
    for record in corpus_sentences():
        by_lang.setdefault(record["lang"], []).append(record["text"])
    langs = sorted(by_lang)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(articles):
            lang = langs[i % len(langs)]
            text = " ".join(rng.sample(by_lang[lang], rng.randint(*sentences)))
            handle.write(json.dumps({"id": f"a{i}", "title": f"Article {i}", "text": text, "lang": lang}) + "\n")
    return path


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> float:
    """Seconds until /readyz answers 200."""
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError("server exited")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)
