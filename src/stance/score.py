"""Batch scoring of article archives: `stance score INPUT... --output FILE`.

articles (streamed from `stance.sources`) → sentences (`stance.segment`) → chunks of
sentences across articles → the predictor (which sorts each chunk by length) → one row
per sentence, written as JSONL, CSV or Parquet.

Memory stays flat: records are read one at a time and scored in chunks. A run works
in a staging folder next to the output (`OUTPUT.parts/`): every chunk is written to a
part file, renamed into place, then recorded in `state.json` together with how many
input records are done. Killed at any moment, a run continues with `--resume` from the
last recorded chunk, without duplicates or gaps; the final files appear only when every
part is merged. Records that cannot be scored go to the errors file with their
location, id and reason, and the exit status says whether any failed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from stance.errors import StanceError
from stance.labels import HEADS
from stance.sources import Article, BadRecord, FieldNames, expand_inputs, iter_records

FORMATS = ("jsonl", "csv", "parquet")
STATE_VERSION = 1


@dataclass
class ScoreOptions:
    """Where and how `stance score` writes."""

    output: Path
    format: str | None = None
    errors: Path | None = None
    summary: Path | None = None
    resume: bool = False
    overwrite: bool = False
    chunk_sentences: int = 1024
    names: FieldNames = field(default_factory=FieldNames)
    backend: str = "auto"

    def resolved_format(self) -> str:
        fmt = self.format or _format_from_suffix(self.output)
        if fmt not in FORMATS:
            raise StanceError(f"{self.output}: cannot tell the output format; pass --format {'|'.join(FORMATS)}")
        return fmt

    def errors_path(self) -> Path:
        return self.errors or self.output.with_name(_stem(self.output) + ".errors.jsonl")


@dataclass
class RunStats:
    """What a run did: records read, articles and sentences scored, records that failed."""

    records: int = 0
    articles: int = 0
    sentences: int = 0
    errors: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.sentences / self.seconds if self.seconds else 0.0
        return (
            f"{self.articles} articles, {self.sentences} sentences scored in {self.seconds:.1f} s "
            f"({rate:.0f} sentences/s); {self.errors} records failed"
        )


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".csv", ".parquet", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _format_from_suffix(path: Path) -> str | None:
    suffix = path.name.removesuffix(".gz").rsplit(".", 1)[-1].lower()
    return {"jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl", "csv": "csv", "parquet": "parquet"}.get(suffix)


def sentence_rows(article: Article, sentences, predictions, labels: dict[str, list[str]]) -> list[dict]:
    """Flat output rows (one per sentence): ids, offsets, text, both labels and every probability."""
    rows = []
    for index, (sentence, prediction) in enumerate(zip(sentences, predictions, strict=True)):
        row = {
            "article_id": article.id,
            "sentence_index": index,
            "start": sentence.start,
            "end": sentence.end,
            "text": sentence.text,
            "lang": article.lang,
        }
        rows.append(row | label_columns(prediction, labels))
    return rows


def label_columns(prediction, labels: dict[str, list[str]]) -> dict:
    """The label part of an output row: per head the label, its confidence, every probability; truncation."""
    columns: dict = {}
    for head in HEADS:
        result = getattr(prediction, head)
        columns[head] = result.label
        columns[f"{head}_confidence"] = result.confidence
        columns |= {f"{head}_p_{label}": result.probabilities[label] for label in labels[head]}
    columns["truncated"] = prediction.truncated
    return columns


class _Staging:
    """The staging folder of one run: numbered part files plus `state.json`, all written atomically."""

    def __init__(self, output: Path, fingerprint: str) -> None:
        self.folder = output.with_name(output.name + ".parts")
        self.state_path = self.folder / "state.json"
        self.fingerprint = fingerprint

    def start(self, resume: bool) -> dict:
        if self.folder.exists() and resume:
            state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else None
            if state is None or state.get("version") != STATE_VERSION:
                state = self._fresh()
            elif state["fingerprint"] != self.fingerprint:
                raise StanceError(
                    f"{self.folder}: the interrupted run read other inputs or options; "
                    "rerun without --resume and with --overwrite to start over"
                )
            # A part renamed into place after the last state write is not counted: drop it.
            for path in self.folder.iterdir():
                if path.name != "state.json" and _part_number(path) > state["parts"]:
                    path.unlink()
            return state
        if self.folder.exists():
            shutil.rmtree(self.folder)
        return self._fresh()

    def _fresh(self) -> dict:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {"version": STATE_VERSION, "fingerprint": self.fingerprint, "parts": 0, "stats": RunStats().__dict__}
        self.save(state)
        return state

    def save(self, state: dict) -> None:
        _atomic_write(self.state_path, lambda handle: handle.write(json.dumps(state).encode()))

    def part(self, kind: str, number: int, suffix: str) -> Path:
        return self.folder / f"{kind}-{number:06d}.{suffix}"

    def parts(self, kind: str, suffix: str, count: int) -> list[Path]:
        return [self.part(kind, n, suffix) for n in range(1, count + 1)]


def _part_number(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return sys.maxsize  # stray file: not part of the recorded state


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _write_rows(path: Path, rows: list[dict], fmt: str, columns: Sequence[str]) -> None:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=_arrow_schema(columns))
        _atomic_write(path, lambda handle: pq.write_table(table, handle))
    elif fmt == "csv":

        def write_csv(handle) -> None:
            text = _TextSink(handle)
            writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
            writer.writerows(rows)

        _atomic_write(path, write_csv)
    else:
        _atomic_write(path, lambda handle: handle.writelines(_jsonl_bytes(rows)))


def _jsonl_bytes(rows: Iterable[dict]) -> Iterator[bytes]:
    for row in rows:
        yield (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")


class _TextSink:
    """A text-mode view of a binary handle for the csv module."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def write(self, text: str) -> int:
        return self.handle.write(text.encode("utf-8"))


def _arrow_schema(columns: Sequence[str]):
    import pyarrow as pa

    types = {"sentence_index": pa.int64(), "start": pa.int64(), "end": pa.int64(), "truncated": pa.bool_()}
    for name in columns:
        if name.endswith("_confidence") or "_p_" in name:
            types[name] = pa.float64()
    return pa.schema([(name, types.get(name, pa.string())) for name in columns])


def _merge(parts: list[Path], target: Path, fmt: str, columns: Sequence[str]) -> None:
    """Concatenate part files into `target`, streaming, via a temporary file renamed at the end."""
    tmp = target.with_name(target.name + ".tmp")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetWriter(tmp, _arrow_schema(columns)) as writer:
            for part in parts:
                writer.write_table(pq.read_table(part, schema=_arrow_schema(columns)))
    else:
        with open(tmp, "wb") as out:
            if fmt == "csv":
                out.write((",".join(columns) + "\n").encode("utf-8"))
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out)
    tmp.replace(target)


def fingerprint(files: Sequence[Path], options: ScoreOptions, model_dir: Path, predictor_backend: str) -> str:
    """What must not change between an interrupted run and its resumption."""
    described = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    settings = [
        options.resolved_format(),
        options.chunk_sentences,
        options.names.__dict__,
        str(model_dir),
        options.summary is not None,
        predictor_backend,
    ]
    return hashlib.sha256(json.dumps([described, settings], sort_keys=True).encode()).hexdigest()


def score(inputs: Sequence[str], model_dir: Path, options: ScoreOptions, progress: bool = True) -> RunStats:
    """Score every article of `inputs` into `options.output`; see the module docstring."""
    from tqdm import tqdm

    from stance.predict import Predictor
    from stance.segment import guess_language, split_sentences
    from stance.summary import summarize

    fmt = options.resolved_format()
    files = expand_inputs(inputs)
    targets = [options.output, options.errors_path()] + ([options.summary] if options.summary else [])
    existing = [t for t in targets if t.exists()]
    if existing and not (options.overwrite or options.resume):
        raise StanceError(f"{existing[0]} exists: pass --overwrite to replace it (or --resume an interrupted run)")
    predictor = Predictor(model_dir, backend=options.backend)
    labels = predictor.labels
    columns = _columns(labels)
    staging = _Staging(options.output, fingerprint(files, options, model_dir, predictor.backend))
    state = staging.start(options.resume)
    stats = RunStats(**state["stats"])
    started = time.monotonic() - stats.seconds

    records = islice(iter_records(files, options.names), stats.records, None)
    bar = tqdm(
        total=None,
        initial=stats.records,
        unit=" articles",
        disable=not progress,
        desc="scoring",
        dynamic_ncols=True,
    )

    def flush(batch: list[tuple[Article, list]], bad: list[BadRecord], consumed: int) -> None:
        texts = [s.text for _, sentences in batch for s in sentences]
        predictions = iter(predictor.predict(texts))
        rows, summaries = [], []
        for article, sentences in batch:
            article_predictions = list(islice(predictions, len(sentences)))
            rows += sentence_rows(article, sentences, article_predictions, labels)
            if options.summary:
                summary = summarize(article_predictions, labels)
                summaries.append(
                    {
                        "article_id": article.id,
                        "title": article.title,
                        "date": article.date,
                        "url": article.url,
                        "lang": article.lang,
                    }
                    | summary
                )
        number = state["parts"] + 1
        _write_rows(staging.part("rows", number, fmt), rows, fmt, columns)
        _atomic_write(
            staging.part("errors", number, "jsonl"), lambda h: h.writelines(_jsonl_bytes([b.to_dict() for b in bad]))
        )
        if options.summary:
            _atomic_write(staging.part("summary", number, "jsonl"), lambda h: h.writelines(_jsonl_bytes(summaries)))
        stats.records += consumed
        stats.articles += len(batch)
        stats.sentences += len(texts)
        stats.errors += len(bad)
        stats.seconds = time.monotonic() - started
        state["parts"] = number
        state["stats"] = stats.__dict__
        staging.save(state)
        bar.update(consumed)
        elapsed = max(time.monotonic() - started, 1e-9)
        bar.set_postfix(
            articles_s=f"{stats.articles / elapsed:.1f}",
            sentences_s=f"{stats.sentences / elapsed:.0f}",
            errors=stats.errors,
        )

    batch: list[tuple[Article, list]] = []
    bad: list[BadRecord] = []
    consumed = pending_sentences = 0
    for record in records:
        consumed += 1
        if isinstance(record, BadRecord):
            bad.append(record)
        else:
            record.lang = record.lang or guess_language(record.text)
            sentences = split_sentences(record.text, record.lang)
            if sentences:
                batch.append((record, sentences))
                pending_sentences += len(sentences)
            else:
                bad.append(BadRecord(record.location, "empty article: no sentences", record.id))
        if pending_sentences >= options.chunk_sentences:
            flush(batch, bad, consumed)
            batch, bad, consumed, pending_sentences = [], [], 0, 0
    if consumed:
        flush(batch, bad, consumed)
    bar.close()

    count = state["parts"]
    _merge(staging.parts("rows", fmt, count), options.output, fmt, columns)
    _merge(staging.parts("errors", "jsonl", count), options.errors_path(), "jsonl", [])
    if options.summary:
        _merge(staging.parts("summary", "jsonl", count), options.summary, "jsonl", [])
    shutil.rmtree(staging.folder)
    stats.seconds = time.monotonic() - started
    return stats


def _columns(labels: dict[str, list[str]]) -> list[str]:
    columns = ["article_id", "sentence_index", "start", "end", "text", "lang"]
    for head in HEADS:
        columns += [head, f"{head}_confidence"] + [f"{head}_p_{label}" for label in labels[head]]
    return [*columns, "truncated"]
