"""The annotated corpus: reading, validating, splitting and counting.

A record is one sentence with its two labels (see `data/GUIDELINES.md`):

    {"id": "...", "text": "...", "lang": "en", "claim_type": "...", "stance": "...",
     "source": "written", "split": "train", "group": "..."}

`group` ties a sentence to its paraphrases and translations; a group never spans two
splits. Every problem is reported as `file:line: rule: message`.

Run `python -m stance.data validate` (also `stance data validate`) to check the bundled
corpus and its datasheet.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stance.errors import StanceError
from stance.labels import HEADS, LabelSchema

SPLITS = ("train", "validation", "test")
SOURCES = ("seed", "seed-paraphrase", "seed-translation", "written", "article")
CORPUS_FIELDS = ("id", "text", "lang", "claim_type", "stance", "source", "split", "group")
MAX_TEXT_CHARS = 1000
NEAR_DUPLICATE_JACCARD = 0.7
DATASHEET_BEGIN = "<!-- BEGIN GENERATED COUNTS: python -m stance.data validate --write-datasheet -->"
DATASHEET_END = "<!-- END GENERATED COUNTS -->"


@dataclass
class Record:
    """One annotated sentence and where it came from (`file:line`)."""

    fields: dict[str, object]
    where: str

    def __getitem__(self, key: str) -> object:
        return self.fields[key]

    def get(self, key: str, default: object = None) -> object:
        return self.fields.get(key, default)


@dataclass
class Problems:
    """Collected `file:line: rule: message` violations."""

    items: list[str] = field(default_factory=list)

    def add(self, where: str, rule: str, message: str) -> None:
        self.items.append(f"{where}: {rule}: {message}")

    def raise_if_any(self, limit: int = 50) -> None:
        if self.items:
            shown = self.items[:limit]
            more = f"\n... and {len(self.items) - limit} more" if len(self.items) > limit else ""
            raise StanceError(f"{len(self.items)} problem(s) in the data:\n" + "\n".join(shown) + more)


def read_records(path: Path) -> list[Record]:
    """Read JSONL (one object per line) or CSV (a header row), optionally gzip-compressed.

    Malformed lines are a StanceError naming the file and line; an empty file is one too.
    """
    path = Path(path)
    if not path.is_file():
        raise StanceError(f"{path}: no such file")
    suffixes = [s.lower() for s in path.suffixes]
    opener = gzip.open if suffixes[-1:] == [".gz"] else open
    kind = suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    records: list[Record] = []
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            if kind == ".csv":
                for number, row in enumerate(csv.DictReader(handle), start=2):
                    records.append(Record({k: v for k, v in row.items() if k is not None}, f"{path}:{number}"))
            else:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError as exc:
                        raise StanceError(f"{path}:{number}: json: not valid JSON ({exc.msg})") from exc
                    if not isinstance(obj, dict):
                        raise StanceError(f"{path}:{number}: json: expected a JSON object, got {type(obj).__name__}")
                    records.append(Record(obj, f"{path}:{number}"))
    except UnicodeDecodeError as exc:
        raise StanceError(f"{path}: encoding: the file is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except (OSError, EOFError) as exc:
        raise StanceError(f"{path}: cannot read ({exc})") from exc
    if not records:
        raise StanceError(f"{path}: empty: the file holds no records")
    return records


def check_labelled(records: Iterable[Record], schema: LabelSchema, problems: Problems) -> None:
    """The rules every training record obeys: a non-empty text and known labels."""
    for record in records:
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            problems.add(record.where, "empty-text", "'text' is missing or empty")
        elif len(text) > MAX_TEXT_CHARS:
            problems.add(record.where, "long-text", f"text has {len(text)} characters (at most {MAX_TEXT_CHARS})")
        for head in HEADS:
            value = record.get(head)
            if value is None or value == "":
                problems.add(record.where, "missing-field", f"'{head}' is missing")
            elif value not in schema[head]:
                problems.add(record.where, "unknown-label", f"{head} {value!r} is not one of {', '.join(schema[head])}")


def validate_corpus(records: Sequence[Record], schema: LabelSchema) -> Problems:
    """Check the corpus rules: schema, labels, unique ids, groups within one split, no duplicates."""
    problems = Problems()
    check_labelled(records, schema, problems)
    _check_unique_ids(records, problems)
    group_splits: dict[str, dict[str, str]] = defaultdict(dict)
    for record in records:
        missing = [name for name in CORPUS_FIELDS if name not in record.fields]
        if missing:
            problems.add(record.where, "missing-field", f"missing {', '.join(missing)}")
            continue
        wrong_type = [name for name in CORPUS_FIELDS if not isinstance(record[name], str)]
        if wrong_type:
            problems.add(record.where, "type", f"{', '.join(wrong_type)} must be strings")
            continue
        if not re.fullmatch(r"[a-z]{2}", str(record["lang"])):
            problems.add(record.where, "lang", f"lang {record['lang']!r} is not an ISO 639-1 code")
        if record["source"] not in SOURCES:
            problems.add(record.where, "source", f"source {record['source']!r} is not one of {', '.join(SOURCES)}")
        if record["split"] not in SPLITS:
            problems.add(record.where, "split", f"split {record['split']!r} is not one of {', '.join(SPLITS)}")
        if "\n" in str(record["text"]):
            problems.add(record.where, "newline", "text holds a line break (one sentence per record)")
        group_splits[str(record["group"])].setdefault(str(record["split"]), record.where)
    for group, splits in group_splits.items():
        if len(splits) > 1:
            places = "; ".join(f"{split} at {where}" for split, where in sorted(splits.items()))
            problems.add(next(iter(splits.values())), "group-split", f"group {group!r} spans splits: {places}")
    _check_duplicates(records, problems)
    return problems


def _check_unique_ids(records: Iterable[Record], problems: Problems) -> None:
    seen: dict[str, str] = {}
    for record in records:
        record_id = str(record.get("id"))
        if record_id in seen:
            problems.add(record.where, "duplicate-id", f"id {record_id!r} is already used at {seen[record_id]}")
        seen.setdefault(record_id, record.where)


def normalize_text(text: str) -> str:
    """Casefolded NFKC text with punctuation removed and whitespace collapsed, for duplicate checks."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch if not unicodedata.category(ch).startswith(("P", "S")) else " " for ch in text)
    return " ".join(text.split())


def _shingles(normalized: str) -> set[str]:
    words = normalized.split()
    if len(words) < 3:
        return {normalized}
    return {" ".join(words[i : i + 3]) for i in range(len(words) - 2)}


def _postings(shingles: Sequence[set[str]]) -> dict[str, list[int]]:
    """An inverted index: trigram → the indexes of the texts that contain it."""
    postings: dict[str, list[int]] = defaultdict(list)
    for index, grams in enumerate(shingles):
        for gram in grams:
            postings[gram].append(index)
    return postings


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


def _check_duplicates(records: Sequence[Record], problems: Problems) -> None:
    """Exact duplicates (after normalization) anywhere; near-duplicates across splits.

    Near-duplicates are pairs whose word-trigram Jaccard similarity is at least
    NEAR_DUPLICATE_JACCARD, found through an inverted index of trigrams that are rare
    enough to be informative (a pair must share at least one of them).
    """
    usable = [r for r in records if isinstance(r.get("text"), str) and r.get("split") in SPLITS]
    normalized = [normalize_text(str(r["text"])) for r in usable]
    first_seen: dict[str, int] = {}
    for index, key in enumerate(normalized):
        if key in first_seen:
            other = usable[first_seen[key]]
            problems.add(usable[index].where, "duplicate-text", f"same text (normalized) as {other.where}")
        else:
            first_seen[key] = index
    shingles = [_shingles(key) for key in normalized]
    reported: set[tuple[int, int]] = set()
    for members in _postings(shingles).values():
        if len(members) > 200:  # a stock phrase ("said on wednesday"): not evidence of a duplicate
            continue
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1 :]:
                if usable[a]["split"] == usable[b]["split"] or (a, b) in reported:
                    continue
                reported.add((a, b))
                overlap = _jaccard(shingles[a], shingles[b])
                if overlap >= NEAR_DUPLICATE_JACCARD and normalized[a] != normalized[b]:
                    problems.add(
                        usable[b].where,
                        "near-duplicate",
                        f"{overlap:.0%} like {usable[a].where} in split {usable[a]['split']} "
                        "(put them in one group, or reword)",
                    )


def assign_splits(
    records: Sequence[Record],
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 13,
    pinned_test_prefix: str | None = "seed-",
    keep_splits: bool = False,
    stratify: Sequence[str] = ("lang", "claim_type", "stance"),
) -> None:
    """Give every record a split, by group, stratified by language and labels.

    Groups whose id starts with `pinned_test_prefix` (the seed article and its
    paraphrases and translations) all go to test. The other groups are taken in a
    seeded hash order within each stratum (the `stratify` fields of the group's first
    sentence: language, claim type, stance) and each goes to the split furthest below its
    share of sentences. Groups that are whole articles have mixed labels: stratify them
    by language alone, so that each language's articles are shared out.

    With `keep_splits`, a group that already has a split keeps it (new members of the
    group join it) and only new groups are assigned, with `fractions` as their shares:
    adding data then never moves a sentence between splits, so scores stay comparable.
    """
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[str(record.get("group") or record.get("id") or record.where)].append(record)
    strata: dict[tuple, list[str]] = defaultdict(list)
    for group, members in groups.items():
        existing = {str(r.get("split")) for r in members if r.get("split") in SPLITS} if keep_splits else set()
        if len(existing) > 1:
            raise StanceError(f"group {group} already spans the splits {', '.join(sorted(existing))}")
        if existing or (pinned_test_prefix and group.startswith(pinned_test_prefix)):
            split = existing.pop() if existing else "test"
            for record in members:
                record.fields["split"] = split
            continue
        head = members[0]
        strata[tuple(head.get(name) for name in stratify)].append(group)
    for stratum in sorted(strata, key=str):
        order = sorted(strata[stratum], key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        sizes = Counter()
        total = sum(len(groups[g]) for g in order)
        for group in order:
            split = max(SPLITS, key=lambda s: fractions[SPLITS.index(s)] * total - sizes[s])
            sizes[split] += len(groups[group])
            for record in groups[group]:
                record.fields["split"] = split


def count_tables(records: Sequence[Record]) -> str:
    """Markdown tables of sentence counts: per head, label × language, each cell train / validation / test."""
    langs = sorted({str(r["lang"]) for r in records})
    lines = ["Each cell: train / validation / test.", ""]
    for head in HEADS:
        labels = sorted({str(r[head]) for r in records})
        counts = Counter((str(r["lang"]), str(r[head]), str(r["split"])) for r in records)

        def cell(lang_set: Sequence[str], label_set: Sequence[str], counts=counts) -> str:
            per_split = [sum(counts[(lg, lb, s)] for lg in lang_set for lb in label_set) for s in SPLITS]
            return f"{sum(per_split)} ({' / '.join(map(str, per_split))})"

        lines += [f"**{head}** × language", ""]
        lines.append("| lang | " + " | ".join(labels) + " | all |")
        lines.append("|---" * (len(labels) + 2) + "|")
        for lang in [*langs, "all"]:
            lang_set = langs if lang == "all" else [lang]
            row = [cell(lang_set, [label]) for label in labels] + [cell(lang_set, labels)]
            lines.append(f"| {lang} | " + " | ".join(row) + " |")
        lines.append("")
    pairs = Counter((str(r["claim_type"]), str(r["stance"])) for r in records)
    stances = sorted({str(r["stance"]) for r in records})
    lines += ["**claim_type** × **stance** (all splits)", ""]
    lines.append("| claim_type | " + " | ".join(stances) + " |")
    lines.append("|---" * (len(stances) + 1) + "|")
    for claim in sorted({str(r["claim_type"]) for r in records}):
        lines.append(f"| {claim} | " + " | ".join(str(pairs[(claim, s)]) for s in stances) + " |")
    lines.append("")
    sources = Counter((str(r["source"]), str(r["split"])) for r in records)
    lines += ["**source** × split", "", "| source | " + " | ".join(SPLITS) + " | all |", "|---|---|---|---|---|"]
    for source in sorted({str(r["source"]) for r in records}):
        row = [sources[(source, s)] for s in SPLITS]
        lines.append(f"| {source} | " + " | ".join(map(str, row)) + f" | {sum(row)} |")
    return "\n".join(lines) + "\n"


def sync_datasheet(datasheet: Path, tables: str, write: bool) -> bool:
    """Check (or, with `write`, rewrite) the generated count block of the datasheet; True if current."""
    text = datasheet.read_text(encoding="utf-8") if datasheet.is_file() else ""
    if DATASHEET_BEGIN not in text or DATASHEET_END not in text:
        raise StanceError(f"{datasheet}: datasheet: add the markers {DATASHEET_BEGIN} and {DATASHEET_END}")
    head, rest = text.split(DATASHEET_BEGIN, 1)
    _, tail = rest.split(DATASHEET_END, 1)
    updated = f"{head}{DATASHEET_BEGIN}\n{tables}{DATASHEET_END}{tail}"
    if write and updated != text:
        datasheet.write_text(updated, encoding="utf-8")
    return write or updated == text


def agreement(folder: Path) -> dict:
    """Cohen's kappa per head between the first labels of a sample and a blind second pass.

    `folder` holds `first_pass.jsonl` (id, lang, text and the labels before adjudication)
    and `second_pass.jsonl` (id and the second annotator's labels).
    """
    from sklearn.metrics import cohen_kappa_score

    first = {str(r["id"]): r for r in read_records(Path(folder) / "first_pass.jsonl")}
    second = {str(r["id"]): r for r in read_records(Path(folder) / "second_pass.jsonl")}
    if set(first) != set(second):
        raise StanceError(f"{folder}: the first and second passes label different sentences")
    ids = sorted(first)
    result: dict = {"n": len(ids), "languages": dict(Counter(str(first[i]["lang"]) for i in ids))}
    for head in HEADS:
        a, b = [str(first[i][head]) for i in ids], [str(second[i][head]) for i in ids]
        result[head] = {
            "kappa": float(cohen_kappa_score(a, b)),
            "agreement": sum(x == y for x, y in zip(a, b, strict=True)) / len(ids),
        }
    result["disagreements"] = sum(any(first[i][h] != second[i][h] for h in HEADS) for i in ids)
    return result


def agreement_samples(data_dir: Path) -> list[Path]:
    """The second-annotator samples of a data folder: each `agreement/<name>/` holding a second pass."""
    return sorted(path.parent for path in (Path(data_dir) / "agreement").glob("*/second_pass.jsonl"))


def agreement_table(result: dict, name: str) -> str:
    """The agreement figures of the sample `name` as a Markdown table."""
    langs = ", ".join(f"{lang} {n}" for lang, n in sorted(result["languages"].items()))
    lines = [
        f"Second-annotator sample `{name}`: {result['n']} sentences ({langs}); "
        f"{result['disagreements']} disagree on at least one head.",
        "",
        "| head | Cohen's kappa | raw agreement |",
        "|---|---|---|",
    ]
    lines += [f"| {h} | {result[h]['kappa']:.3f} | {result[h]['agreement']:.3f} |" for h in HEADS]
    return "\n".join(lines) + "\n"


def check_adjudication(records: Sequence[Record], folder: Path, problems: Problems) -> None:
    """Every adjudicated label in `folder/adjudication.jsonl` is the label the corpus carries."""
    by_id = {str(r.get("id")): r for r in records}
    for decision in read_records(Path(folder) / "adjudication.jsonl"):
        record = by_id.get(str(decision["id"]))
        final = decision["final"]
        if record is None:
            problems.add(decision.where, "adjudication", f"id {decision['id']!r} is not in the corpus")
        elif any(record.get(h) != final[h] for h in HEADS):
            problems.add(record.where, "adjudication", f"labels differ from the adjudication at {decision.where}")


def check_heldout(corpus: Sequence[Record], files: Sequence[Path], schema: LabelSchema, problems: Problems) -> None:
    """Held-out evaluation records: labelled, uniquely identified, and sharing no text with the corpus.

    A held-out sentence equal (normalized) to a corpus sentence, or with a word-trigram
    Jaccard similarity of NEAR_DUPLICATE_JACCARD or more, is a leak.
    """
    records = [record for path in files for record in read_records(path)]
    check_labelled(records, schema, problems)
    _check_unique_ids(records, problems)
    corpus_shingles = [_shingles(normalize_text(str(r["text"]))) for r in corpus]
    postings = _postings(corpus_shingles)
    for record in records:
        grams = _shingles(normalize_text(str(record.get("text") or "")))
        for i in sorted({i for gram in grams for i in postings.get(gram, ())}):
            overlap = _jaccard(grams, corpus_shingles[i])
            if overlap >= NEAR_DUPLICATE_JACCARD:
                problems.add(record.where, "heldout-leak", f"{overlap:.0%} like {corpus[i].where}")
                break


def corpus_files(data_dir: Path) -> list[Path]:
    """The corpus files of a data folder: every `*.jsonl` in it."""
    files = sorted(Path(data_dir).glob("*.jsonl"))
    if not files:
        raise StanceError(f"{data_dir}: no *.jsonl corpus files")
    return files


def validate_data_dir(data_dir: Path, write_datasheet: bool = False) -> tuple[list[Record], str]:
    """Validate the corpus in `data_dir` against its `labels.json` and `README.md` datasheet.

    Returns the records and the count tables; raises StanceError listing every problem.
    """
    from stance.labels import load_schema

    schema = load_schema(Path(data_dir) / "labels.json")
    records = [record for path in corpus_files(data_dir) for record in read_records(path)]
    problems = validate_corpus(records, schema)
    samples = agreement_samples(data_dir)
    for sample in samples:
        if (sample / "adjudication.jsonl").is_file():
            check_adjudication(records, sample, problems)
    heldout = sorted((Path(data_dir) / "heldout").glob("*.jsonl"))
    if heldout:
        check_heldout(records, heldout, schema, problems)
    problems.raise_if_any()
    tables = count_tables(records)
    if samples:
        tables += "\n**Label quality**\n\n" + "\n".join(agreement_table(agreement(s), s.name) for s in samples)
    if not sync_datasheet(Path(data_dir) / "README.md", tables, write_datasheet):
        raise StanceError(
            f"{data_dir}/README.md: datasheet-stale: its count tables do not match the files; "
            "run `python -m stance.data validate --write-datasheet`"
        )
    return records, tables


def load_labelled_splits(
    sources: Sequence[str | Path], labels: str | Path | None = None
) -> tuple[dict[str, list[Record]], LabelSchema]:
    """Read labelled data (folders of *.jsonl with labels.json, or JSONL/CSV files), check it, group it by split.

    The label schema is `labels`, else the first folder's labels.json, else inferred from
    the training records. Records without a `split` get one by group (80/10/10). Every
    problem is a StanceError naming the file and line.
    """
    from stance.labels import infer_schema, load_schema

    files: list[Path] = []
    schema_path = Path(labels) if labels else None
    for item in sources:
        path = Path(item)
        if path.is_dir():
            files += corpus_files(path)
            if schema_path is None and (path / "labels.json").is_file():
                schema_path = path / "labels.json"
        else:
            files.append(path)
    records = [record for path in files for record in read_records(path)]
    if any(record.get("split") in (None, "") for record in records):
        assign_splits(records, pinned_test_prefix=None)
    problems = Problems()
    for record in records:
        if record.get("split") not in SPLITS:
            problems.add(record.where, "split", f"split {record.get('split')!r} is not one of {', '.join(SPLITS)}")
    problems.raise_if_any()
    if schema_path:
        schema = load_schema(schema_path)
    else:
        schema = infer_schema(r for r in records if r.get("split") == "train" and all(r.get(h) for h in HEADS))
    check_labelled(records, schema, problems)
    problems.raise_if_any()
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    for record in records:
        splits[str(record["split"])].append(record)
    for name in ("train", "validation"):
        if not splits[name]:
            raise StanceError(f"no {name} records in {', '.join(map(str, files))}")
    return splits, schema


def write_records(records: Iterable[Record], path: Path, field_order: Sequence[str] = CORPUS_FIELDS) -> None:
    """Write records as JSONL with a stable field order (known fields first), atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            ordered = {k: record.fields[k] for k in field_order if k in record.fields}
            ordered |= {k: v for k, v in record.fields.items() if k not in ordered}
            handle.write(json.dumps(ordered, ensure_ascii=False) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    from stance.cli import data_group

    data_group(prog_name="python -m stance.data")
