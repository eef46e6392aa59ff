"""The corpus validator on the committed data, and each of its rules on broken copies."""

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO

from stance.data import Record, assign_splits, read_records, validate_data_dir
from stance.errors import StanceError


def test_committed_corpus_passes_every_rule_and_matches_its_datasheet() -> None:
    records, tables = validate_data_dir(REPO / "data")
    assert len(records) >= 4000
    langs = {str(r["lang"]) for r in records}
    assert {"en", "ru", "uk", "ar", "fr", "de", "es", "tr"} <= langs
    for lang in langs:
        assert sum(r["lang"] == lang for r in records) >= 300, lang
    assert sum(r["lang"] != "en" for r in records) >= len(records) / 2
    for label in ("accusation", "denial", "military_report", "diplomatic_statement", "other"):
        assert sum(r["claim_type"] == label for r in records) >= 500, label
    for label in ("supportive", "critical", "neutral"):
        assert sum(r["stance"] == label for r in records) >= 600, label
        assert sum(r["claim_type"] == "denial" and r["stance"] == label for r in records) > 0
    assert all(r["split"] == "test" for r in records if str(r["group"]).startswith("seed-"))
    assert "Cohen's kappa" in tables


@pytest.fixture
def corpus_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("labels.json", "README.md", "seed.jsonl"):
        shutil.copy(REPO / "data" / name, folder / name)
    lines = (REPO / "data" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:300]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    validate_data_dir(folder, write_datasheet=True)
    return folder


def _edit(folder: Path, line: int, change: dict) -> None:
    path = folder / "corpus.jsonl"
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    rows[line - 1] = {k: v for k, v in (rows[line - 1] | change).items() if v is not None}
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"claim_type": "rumour"}, "unknown-label"),
        ({"stance": None}, "missing-field"),
        ({"group": None}, "missing-field"),
        ({"text": "  "}, "empty-text"),
        ({"text": "x" * 1001}, "long-text"),
        ({"text": "two\nlines"}, "newline"),
        ({"lang": "english"}, "lang"),
        ({"source": "scraped"}, "source"),
        ({"split": "dev"}, "split"),
        ({"id": 7}, "type"),
    ],
)
def test_each_rule_names_file_line_and_rule(corpus_copy: Path, change: dict, rule: str) -> None:
    _edit(corpus_copy, 5, change)
    with pytest.raises(StanceError, match=rf"corpus\.jsonl:5: {rule}: "):
        validate_data_dir(corpus_copy)


def test_duplicate_ids_texts_and_groups(corpus_copy: Path) -> None:
    rows = [json.loads(x) for x in (corpus_copy / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    other = next(i for i, r in enumerate(rows) if r["split"] != rows[0]["split"]) + 1
    _edit(corpus_copy, other, {"id": rows[0]["id"]})
    with pytest.raises(StanceError, match=rf"corpus\.jsonl:{other}: duplicate-id"):
        validate_data_dir(corpus_copy)
    _edit(corpus_copy, other, {"id": "fresh-id", "group": rows[0]["group"]})
    with pytest.raises(StanceError, match=r"group-split: group .* spans splits"):
        validate_data_dir(corpus_copy)
    _edit(corpus_copy, other, {"group": "fresh-group", "text": rows[0]["text"].upper() + " !"})
    with pytest.raises(StanceError, match=rf"corpus\.jsonl:{other}: duplicate-text: same text \(normalized\)"):
        validate_data_dir(corpus_copy)
    long = next(r for r in rows if len(r["text"].split()) >= 15 and r["split"] != rows[other - 1]["split"])
    words = long["text"].split()
    near = " ".join([*words[:-1], "yesterday", words[-1]])  # one word added: a near-duplicate
    _edit(corpus_copy, other, {"text": near})
    with pytest.raises(StanceError, match="near-duplicate"):
        validate_data_dir(corpus_copy)


def test_stale_datasheet_and_bad_json(corpus_copy: Path) -> None:
    lines = (corpus_copy / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    (corpus_copy / "corpus.jsonl").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(StanceError, match="datasheet-stale"):
        validate_data_dir(corpus_copy)
    (corpus_copy / "corpus.jsonl").write_text("\n".join([*lines[:9], "{oops"]) + "\n", encoding="utf-8")
    with pytest.raises(StanceError, match=r"corpus\.jsonl:10: json: not valid JSON"):
        validate_data_dir(corpus_copy)


def test_splits_keep_groups_together_and_pin_the_seed(tmp_path: Path) -> None:
    records = read_records(REPO / "data" / "corpus.jsonl")
    for record in records:
        record.fields.pop("split")
    assign_splits(records, fractions=(0.8, 0.1, 0.1), seed=3)
    by_group: dict[str, set[str]] = {}
    for record in records:
        by_group.setdefault(str(record["group"]), set()).add(str(record["split"]))
    assert all(len(splits) == 1 for splits in by_group.values())
    assert all(splits == {"test"} for group, splits in by_group.items() if group.startswith("seed-"))
    written = [r for r in records if r["source"] == "written"]
    share = sum(r["split"] == "train" for r in written) / len(written)
    assert 0.75 < share < 0.85


def test_keep_splits_assigns_only_new_groups(tmp_path: Path) -> None:
    records = read_records(REPO / "data" / "corpus.jsonl")
    before = {str(r["id"]): r["split"] for r in records}
    added = [
        Record(
            {"id": f"new-{i}", "text": f"Sentence {i}.", "lang": "en", "claim_type": "other", "stance": "neutral"},
            "new",
        )
        for i in range(40)
    ]
    joining = Record({**records[0].fields, "id": "new-joins-a-group"}, "new")
    joining.fields.pop("split")
    assign_splits([*records, *added, joining], fractions=(0.9, 0.1, 0.0), keep_splits=True)
    assert {str(r["id"]): r["split"] for r in records} == before  # nothing moved
    assert joining["split"] == records[0]["split"]
    new_splits = Counter(r["split"] for r in added)
    assert new_splits["test"] == 0 and new_splits["train"] > new_splits["validation"] > 0
    other_split = "test" if records[0]["split"] != "test" else "train"
    torn = [Record({**records[0].fields, "id": "x", "split": other_split}, "new")]
    with pytest.raises(StanceError, match="already spans the splits"):
        assign_splits([records[0], *torn], keep_splits=True)


def test_whole_articles_are_shared_out_per_language_when_stratified_by_language() -> None:
    labels = [("accusation", "critical"), ("denial", "neutral"), ("other", "neutral"), ("military_report", "neutral")]
    articles = [
        [
            Record(
                {
                    "id": f"{lang}-w-{a}-{i}",
                    "text": f"Sentence {i} of article {a}.",
                    "lang": lang,
                    "claim_type": labels[(a + i) % 4][0],
                    "stance": labels[(a + i) % 4][1],
                    "source": "article",
                    "group": f"{lang}-wa-{a}",
                },
                "new",
            )
            for i in range(10)
        ]
        for lang in ("en", "de", "ar")
        for a in range(4)
    ]
    records = [r for article in articles for r in article]
    assign_splits(records, fractions=(0.75, 0.25, 0.0), stratify=("lang",))
    assert all(len({r["split"] for r in article}) == 1 for article in articles)  # an article is never cut
    for lang in ("en", "de", "ar"):
        splits = Counter(article[0]["split"] for article in articles if article[0]["lang"] == lang)
        assert splits == {"train": 3, "validation": 1}
    # by the default strata (the headline's labels) each article is a stratum of its own: all go to train
    assign_splits(records, fractions=(0.75, 0.25, 0.0))
    assert {r["split"] for r in records} == {"train"}


def test_heldout_sentences_may_not_leak_from_the_corpus(corpus_copy: Path) -> None:
    rows = [json.loads(x) for x in (corpus_copy / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    heldout = corpus_copy / "heldout"
    heldout.mkdir()
    fresh = {"id": "h-1", "text": "A sentence nobody wrote before about a quiet harbour.", "lang": "en"}
    leaked = {"id": "h-2", "text": rows[7]["text"] + " ", "lang": rows[7]["lang"]}
    labels = {"claim_type": "other", "stance": "neutral"}
    (heldout / "x.jsonl").write_text(
        "".join(json.dumps(r | labels, ensure_ascii=False) + "\n" for r in (fresh, leaked)), encoding="utf-8"
    )
    with pytest.raises(StanceError, match=r"x\.jsonl:2: heldout-leak: 100% like .*corpus\.jsonl:8"):
        validate_data_dir(corpus_copy)
    (heldout / "x.jsonl").write_text(json.dumps(fresh | labels) + "\n", encoding="utf-8")
    validate_data_dir(corpus_copy)


def test_every_agreement_sample_is_tabled_and_its_adjudication_checked(corpus_copy: Path) -> None:
    rows = [json.loads(x) for x in (corpus_copy / "corpus.jsonl").read_text(encoding="utf-8").splitlines()][:6]
    heads = ("claim_type", "stance")
    flipped = {"claim_type": "other", "stance": "supportive"}

    def write(path: Path, records: list[dict]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")

    for name, second_label in (("one", None), ("two", flipped)):
        folder = corpus_copy / "agreement" / name
        write(folder / "first_pass.jsonl", [{k: r[k] for k in ("id", "lang", "text", *heads)} for r in rows])
        second = [{"id": r["id"], **{h: r[h] for h in heads}} for r in rows]
        second[0] |= second_label or {}
        write(folder / "second_pass.jsonl", second)
    decision = {"id": rows[0]["id"], "first": {h: rows[0][h] for h in heads}, "second": flipped, "note": "n"}
    write(corpus_copy / "agreement" / "two" / "adjudication.jsonl", [decision | {"final": flipped}])
    with pytest.raises(StanceError, match=r"corpus\.jsonl:1: adjudication: labels differ .*two/adjudication\.jsonl:1"):
        validate_data_dir(corpus_copy)
    write(corpus_copy / "agreement" / "two" / "adjudication.jsonl", [decision | {"final": decision["first"]}])
    _, tables = validate_data_dir(corpus_copy, write_datasheet=True)
    assert "sample `one`: 6 sentences" in tables and "0 disagree" in tables
    assert "sample `two`: 6 sentences" in tables and "1 disagree" in tables
