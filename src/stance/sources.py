"""Reading article archives as a stream, one article at a time, without losing any record.

Inputs: JSON Lines (`.jsonl`, `.json`, `.ndjson`), CSV, Parquet, and directory trees of
`.txt`/`.md`/`.html` files (HTML reduced to the article text by trafilatura), each of
them optionally gzip-compressed, given as paths or globs. Field names are configurable.

Every record yields either an :class:`Article` or a :class:`BadRecord` (where it was,
its id if known, and why it cannot be scored), in a fixed order, so a run can be resumed
by skipping the records already done.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from stance.errors import StanceError

TEXT_SUFFIXES = (".txt", ".md")
HTML_SUFFIXES = (".html", ".htm")


@dataclass
class FieldNames:
    """Which input fields hold each part of an article."""

    id: str = "id"
    text: str = "text"
    title: str = "title"
    date: str = "date"
    url: str = "url"
    lang: str = "lang"


@dataclass
class Article:
    """One article to score; `location` says where it came from (`file:line` or a path)."""

    id: str
    text: str
    location: str
    title: str | None = None
    date: str | None = None
    url: str | None = None
    lang: str | None = None


@dataclass
class BadRecord:
    """A record that cannot be scored, and why."""

    location: str
    reason: str
    id: str | None = None

    def to_dict(self) -> dict:
        return {"location": self.location, "id": self.id, "reason": self.reason}


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Paths and globs → a sorted, de-duplicated list of files (directories are walked)."""
    files: list[Path] = []
    for item in inputs:
        matches = sorted(glob.glob(item, recursive=True)) or ([item] if Path(item).exists() else [])
        if not matches:
            raise StanceError(f"{item}: no such file, folder or matching glob")
        for match in map(Path, matches):
            if match.is_dir():
                files += sorted(p for p in match.rglob("*") if p.is_file() and _kind(p) in ("text", "html"))
            else:
                files.append(match)
    unique = list(dict.fromkeys(files))
    for path in unique:
        if _kind(path) is None:
            raise StanceError(
                f"{path}: unknown input format (use .jsonl, .json, .csv, .parquet, .txt, .md, .html, optionally .gz)"
            )
    return unique


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _kind(path: Path) -> str | None:
    suffix = _suffix(path)
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".parquet"):
        return suffix[1:]
    return None


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def iter_records(files: Sequence[Path], names: FieldNames) -> Iterator[Article | BadRecord]:
    """Every record of every file, in order, as an Article or a BadRecord."""
    for path in files:
        kind = _kind(path)
        try:
            if kind == "jsonl":
                yield from _jsonl(path, names)
            elif kind == "csv":
                yield from _csv(path, names)
            elif kind == "parquet":
                yield from _parquet(path, names)
            else:
                yield _document(path, names, html=kind == "html")
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            yield BadRecord(str(path), f"cannot read the file: {exc}")


def _from_mapping(row: dict, location: str, names: FieldNames) -> Article | BadRecord:
    raw_id = row.get(names.id)
    record_id = str(raw_id) if raw_id not in (None, "") else location
    text = row.get(names.text)
    if text is None:
        return BadRecord(location, f"missing text field '{names.text}'", record_id)
    if not isinstance(text, str):
        return BadRecord(location, f"text field '{names.text}' is {type(text).__name__}, not a string", record_id)
    if not text.strip():
        return BadRecord(location, "empty article: the text is blank", record_id)

    def optional(name: str) -> str | None:
        value = row.get(name)
        return None if value in (None, "") else str(value)

    return Article(
        id=record_id,
        text=text,
        location=location,
        title=optional(names.title),
        date=optional(names.date),
        url=optional(names.url),
        lang=optional(names.lang),
    )


def _jsonl(path: Path, names: FieldNames) -> Iterator[Article | BadRecord]:
    with _open_bytes(path) as handle:
        for number, raw in enumerate(handle, start=1):
            location = f"{path}:{number}"
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield BadRecord(location, f"undecodable bytes: not UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                yield BadRecord(location, f"bad JSON: {exc}")
                continue
            if not isinstance(row, dict):
                yield BadRecord(location, f"bad JSON: expected an object, got {type(row).__name__}")
                continue
            yield _from_mapping(row, location, names)


def _csv(path: Path, names: FieldNames) -> Iterator[Article | BadRecord]:
    csv.field_size_limit(64 * 2**20)  # whole articles live in one field
    with _open_bytes(path) as raw:
        # surrogateescape keeps undecodable bytes visible, so one bad row is one bad record.
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.DictReader(text)
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield BadRecord(f"{path}:{start}", f"bad CSV: {exc}")
                continue
            location = f"{path}:{start}"
            if None in row or any(value is None for value in row.values()):
                yield BadRecord(location, "bad CSV row: the number of fields does not match the header")
            elif any(_UNDECODABLE.search(value) for value in row.values()):
                yield BadRecord(location, "undecodable bytes: the row is not valid UTF-8", row.get(names.id) or None)
            else:
                yield _from_mapping(row, location, names)


_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _parquet(path: Path, names: FieldNames) -> Iterator[Article | BadRecord]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(_open_bytes(path) if path.suffix.lower() == ".gz" else path)
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        yield BadRecord(str(path), f"cannot read the Parquet file: {exc}")
        return
    row_number = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            row_number += 1
            yield _from_mapping(row, f"{path}:row {row_number}", names)


def _document(path: Path, names: FieldNames, html: bool) -> Article | BadRecord:
    with _open_bytes(path) as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRecord(str(path), f"undecodable bytes: not UTF-8 ({exc.reason} at byte {exc.start})", path.stem)
    title = None
    if html:
        import trafilatura

        extracted = trafilatura.bare_extraction(text, with_metadata=True, include_comments=False)
        text = (extracted.text if extracted else "") or ""
        title = extracted.title if extracted else None
    if not text.strip():
        return BadRecord(str(path), "empty article: no text" + (" after HTML extraction" if html else ""), str(path))
    return Article(id=str(path), text=text, location=str(path), title=title)
