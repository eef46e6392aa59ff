"""Batch scoring: every input format, gzip, the errors file, resume after a kill, the Ray path."""

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import seed_records

from stance.errors import StanceError
from stance.score import ScoreOptions, score

SENTENCES = [r["text"] for r in seed_records()[1:45]]


def make_articles(count: int, per_article: int = 4) -> list[dict]:
    """Articles built from seed sentences, each with an id, a title and a few sentences."""
    articles = []
    for i in range(count):
        chosen = [SENTENCES[(i * 7 + k) % len(SENTENCES)] for k in range(1 + i % per_article)]
        articles.append({"id": f"art-{i:04d}", "title": f"Title {i}", "text": " ".join(chosen), "lang": "en"})
    return articles


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run(inputs, out: Path, model: Path, **options) -> tuple[list[dict], list[dict]]:
    opts = ScoreOptions(output=out, **options)
    score([str(i) for i in inputs], model, opts, progress=False)
    errors = [json.loads(line) for line in opts.errors_path().read_text().splitlines()]
    return read_rows(out), errors


def test_jsonl_rows_offsets_and_labels(tiny_trained_model: Path, tmp_path: Path) -> None:
    articles = make_articles(12)
    source = tmp_path / "a.jsonl"
    source.write_text("".join(json.dumps(a) + "\n" for a in articles))
    rows, errors = run([source], tmp_path / "out.jsonl", tiny_trained_model, summary=tmp_path / "summary.jsonl")
    assert errors == []
    by_id = {a["id"]: a for a in articles}
    assert {r["article_id"] for r in rows} == set(by_id)
    for row in rows:
        assert by_id[row["article_id"]]["text"][row["start"] : row["end"]] == row["text"]
        assert row["claim_type_p_" + row["claim_type"]] == row["claim_type_confidence"]
    summaries = [json.loads(line) for line in (tmp_path / "summary.jsonl").read_text().splitlines()]
    assert [s["article_id"] for s in summaries] == [a["id"] for a in articles]
    for summary in summaries:
        count = sum(1 for r in rows if r["article_id"] == summary["article_id"])
        assert summary["sentences"] == count == sum(summary["claim_types"].values())


def _write_inputs(folder: Path, articles: list[dict]) -> dict[str, Path]:
    """The same articles in every supported input format."""
    folder.mkdir()
    paths = {}
    lines = "".join(json.dumps(a) + "\n" for a in articles)
    paths["jsonl"] = folder / "a.jsonl"
    paths["jsonl"].write_text(lines)
    paths["json"] = folder / "b.json"
    paths["json"].write_text(lines)
    paths["jsonl.gz"] = folder / "c.jsonl.gz"
    paths["jsonl.gz"].write_bytes(gzip.compress(lines.encode()))
    with open(folder / "d.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "title", "text", "lang"])
        writer.writeheader()
        writer.writerows(articles)
    paths["csv"] = folder / "d.csv"
    paths["csv.gz"] = folder / "e.csv.gz"
    paths["csv.gz"].write_bytes(gzip.compress(paths["csv"].read_bytes()))
    paths["parquet"] = folder / "f.parquet"
    pq.write_table(pa.Table.from_pylist(articles), paths["parquet"])
    docs = folder / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "one.txt").write_text(articles[0]["text"])
    (docs / "sub" / "two.md").write_text(articles[1]["text"])
    (docs / "three.txt.gz").write_bytes(gzip.compress(articles[2]["text"].encode()))
    html = f"<html><head><title>T</title></head><body><nav>Menu Home</nav><article><p>{articles[3]['text']}</p>"
    html += "</article><footer>Back to top</footer></body></html>"
    (docs / "four.html").write_text(html)
    paths["docs"] = docs
    return paths


def test_every_input_format_gives_the_same_rows(tiny_trained_model: Path, tmp_path: Path) -> None:
    articles = make_articles(6)
    paths = _write_inputs(tmp_path / "in", articles)
    reference, _ = run([paths["jsonl"]], tmp_path / "ref.jsonl", tiny_trained_model)
    key = [(r["article_id"], r["sentence_index"], r["text"], r["claim_type"], r["stance"]) for r in reference]
    for kind in ("json", "jsonl.gz", "csv", "csv.gz", "parquet"):
        rows, errors = run([paths[kind]], tmp_path / f"out-{kind}.jsonl", tiny_trained_model)
        assert errors == [], kind
        assert [(r["article_id"], r["sentence_index"], r["text"], r["claim_type"], r["stance"]) for r in rows] == key
    rows, errors = run([paths["docs"]], tmp_path / "docs.jsonl", tiny_trained_model)
    assert errors == []
    texts = {Path(r["article_id"]).name: [] for r in rows}
    for row in rows:
        texts[Path(row["article_id"]).name].append(row["text"])
    assert set(texts) == {"one.txt", "two.md", "three.txt.gz", "four.html"}
    expected = {r["text"] for r in reference if r["article_id"] == articles[3]["id"]}
    assert set(texts["four.html"]) == expected  # navigation and footer are not article text


def test_several_inputs_and_globs(tiny_trained_model: Path, tmp_path: Path) -> None:
    paths = _write_inputs(tmp_path / "in", make_articles(6))
    rows, _ = run([tmp_path / "in" / "*.jsonl", paths["parquet"]], tmp_path / "out.jsonl", tiny_trained_model)
    assert len({r["article_id"] for r in rows}) == 6
    assert len(rows) == 2 * len(run([paths["jsonl"]], tmp_path / "one.jsonl", tiny_trained_model)[0])


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_output_formats(tiny_trained_model: Path, tmp_path: Path, fmt: str) -> None:
    source = tmp_path / "a.jsonl"
    source.write_text("".join(json.dumps(a) + "\n" for a in make_articles(8)))
    rows, _ = run([source], tmp_path / f"out.{fmt}", tiny_trained_model, chunk_sentences=4)
    reference, _ = run([source], tmp_path / "ref.jsonl", tiny_trained_model)
    assert len(rows) == len(reference)
    assert [str(r["text"]) for r in rows] == [r["text"] for r in reference]
    assert [float(r["stance_confidence"]) for r in rows] == pytest.approx([r["stance_confidence"] for r in reference])


def test_bad_records_go_to_the_errors_file(tiny_trained_model: Path, tmp_path: Path) -> None:
    good = make_articles(3)
    source = tmp_path / "mixed.jsonl"
    with open(source, "wb") as handle:
        handle.write((json.dumps(good[0]) + "\n").encode())
        handle.write(b'{"id": "broken", "text": \n')
        handle.write((json.dumps({"id": "no-text", "title": "x"}) + "\n").encode())
        handle.write((json.dumps({"id": "blank", "text": "   \n  "}) + "\n").encode())
        handle.write((json.dumps({"id": "number", "text": 42}) + "\n").encode())
        handle.write(b'{"id": "latin1", "text": "caf\xe9 au lait."}\n')
        handle.write((json.dumps(good[1]) + "\n").encode())
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_bytes(b'id,text\nc1,"Fine sentence here."\nc2,"\xff\xfe broken bytes"\nc3,too,many,fields\n')
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "binary.txt").write_bytes(b"\xff\xfe\x00\x01")
    (docs / "empty.html").write_text("<html><head><title>Nothing</title></head><body></body></html>")
    out = tmp_path / "out.jsonl"
    opts = ScoreOptions(output=out)
    stats = score([str(source), str(bad_csv), str(docs)], tiny_trained_model, opts, progress=False)
    errors = [json.loads(line) for line in opts.errors_path().read_text().splitlines()]
    assert opts.errors_path() == tmp_path / "out.errors.jsonl"
    reasons = {(e["location"].split("/")[-1], e["reason"].split(":")[0]) for e in errors}
    assert reasons == {
        ("mixed.jsonl:2", "bad JSON"),
        ("mixed.jsonl:3", "missing text field 'text'"),
        ("mixed.jsonl:4", "empty article"),
        ("mixed.jsonl:5", "text field 'text' is int, not a string"),
        ("mixed.jsonl:6", "undecodable bytes"),
        ("bad.csv:3", "undecodable bytes"),
        ("bad.csv:4", "bad CSV row"),
        ("binary.txt", "undecodable bytes"),
        ("empty.html", "empty article"),
    }
    assert {e["id"] for e in errors} >= {"no-text", "blank", "number"}
    scored = {r["article_id"] for r in read_rows(out)}
    assert scored == {good[0]["id"], good[1]["id"], "c1"}
    assert stats.errors == len(errors) == 9 and stats.articles == 3
    assert stats.records == stats.articles + stats.errors  # every record is in one file or the other


def test_cli_exit_status_and_existing_output(tiny_trained_model: Path, tmp_path: Path) -> None:
    source = tmp_path / "a.jsonl"
    source.write_text("".join(json.dumps(a) + "\n" for a in make_articles(3)))
    stance = str(Path(sys.executable).with_name("stance"))
    out = tmp_path / "out.csv"
    command = [stance, "score", str(source), "-o", str(out), "--model", str(tiny_trained_model), "--quiet"]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "done: 3 articles" in first.stderr
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 2 and "exists: pass --overwrite" in again.stderr
    with open(source, "a") as handle:
        handle.write("not json\n")
    failed = subprocess.run([*command, "--overwrite"], capture_output=True, text=True)
    assert failed.returncode == 1 and "1 records failed" in failed.stderr
    missing = subprocess.run(
        [*command[:2], str(tmp_path / "nope*.jsonl"), *command[3:]], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no such file, folder or matching glob" in missing.stderr


def test_resume_after_kill_has_no_duplicates_or_gaps(tiny_trained_model: Path, tmp_path: Path) -> None:
    articles = make_articles(400)
    source = tmp_path / "big.jsonl"
    source.write_text("".join(json.dumps(a) + "\n" for a in articles) + "broken line\n")
    stance = str(Path(sys.executable).with_name("stance"))
    out = tmp_path / "out.parquet"
    command = [
        stance,
        "score",
        str(source),
        "-o",
        str(out),
        "--model",
        str(tiny_trained_model),
        "--quiet",
        "--chunk-sentences",
        "8",
    ]
    state = tmp_path / "out.parquet.parts" / "state.json"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if state.exists() and json.loads(state.read_text() or "{}").get("parts", 0) >= 3:
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists(), "a killed run must not leave a final output file"
    done = json.loads(state.read_text())["stats"]["records"]
    assert 0 < done < len(articles)
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 1, resumed.stderr  # the broken line is reported
    rows = pq.read_table(out).to_pylist()
    reference, errors = run([source], tmp_path / "ref.parquet", tiny_trained_model, chunk_sentences=8)
    assert [(r["article_id"], r["sentence_index"]) for r in rows] == [
        (r["article_id"], r["sentence_index"]) for r in reference
    ]
    assert [r["claim_type_confidence"] for r in rows] == pytest.approx([r["claim_type_confidence"] for r in reference])
    assert len(errors) == 1 and (tmp_path / "out.errors.jsonl").read_text().count("\n") == 1
    assert not (tmp_path / "out.parquet.parts").exists()


def test_resume_refuses_other_inputs(tiny_trained_model: Path, tmp_path: Path) -> None:
    source = tmp_path / "a.jsonl"
    source.write_text("".join(json.dumps(a) + "\n" for a in make_articles(3)))
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()
    (parts / "state.json").write_text(json.dumps({"version": 1, "fingerprint": "other", "parts": 0, "stats": {}}))
    with pytest.raises(StanceError, match="read other inputs or options"):
        score([str(source)], tiny_trained_model, ScoreOptions(tmp_path / "out.jsonl", resume=True), progress=False)


def test_ray_data_path_in_local_mode(tiny_trained_model: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from stance.distributed import score_with_ray

    articles = [*make_articles(10), {"id": "empty", "text": "  "}]
    source = tmp_path / "a.jsonl"
    source.write_text("".join(json.dumps(a) + "\n" for a in articles))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        score_with_ray([str(source)], str(tmp_path / "ray-out"), tiny_trained_model, concurrency=1, batch_size=16)
    finally:
        ray.shutdown()
    rows = pq.read_table(tmp_path / "ray-out").to_pylist()
    errors = [r for r in rows if r["error"]]
    assert [(e["article_id"], e["error"]) for e in errors] == [("empty", "missing or empty text field 'text'")]
    reference, _ = run([source], tmp_path / "ref.jsonl", tiny_trained_model)
    scored = sorted(
        (r["article_id"], r["sentence_index"], r["claim_type"], r["stance"]) for r in rows if not r["error"]
    )
    assert scored == sorted((r["article_id"], r["sentence_index"], r["claim_type"], r["stance"]) for r in reference)
