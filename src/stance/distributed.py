"""Scoring beyond one machine: the same splitter and predictor on Ray Data.

    ray.init()  # or ray.init(address="auto") on a cluster
    score_with_ray(["s3://bucket/articles/*.jsonl"], "s3://bucket/scored/", "models/stance")

Articles are read by Ray's own JSONL/Parquet readers, split into sentences with
`stance.segment` (`flat_map`), and labelled by :class:`RayScorer`, a stateful class that
loads the :class:`~stance.predict.Predictor` once per actor (`map_batches` with
`concurrency` actors). Rows have the columns of `stance score`; an article without text
becomes one row with its `error` (empty for scored sentences), so every input article is
accounted for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stance.score import label_columns
from stance.sources import FieldNames

DEFAULT_NAMES = FieldNames()


class RayScorer:
    """A Ray Data UDF with state: the predictor is loaded once, then labels batch after batch."""

    def __init__(self, model_dir: str, num_threads: int | None = None) -> None:
        from stance.predict import Predictor

        self.predictor = Predictor(model_dir, num_threads=num_threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        to_score = [i for i, row in enumerate(rows) if not row["error"]]
        predictions = self.predictor.predict([str(rows[i]["text"]) for i in to_score])
        labelled = {i: label_columns(p, self.predictor.labels) for i, p in zip(to_score, predictions, strict=True)}
        empty = dict.fromkeys(next(iter(labelled.values()), {}))
        out = [row | labelled.get(i, empty) for i, row in enumerate(rows)]
        return {key: [row.get(key) for row in out] for key in out[0]} if out else {}


def split_article(row: dict, names: FieldNames = DEFAULT_NAMES) -> list[dict]:
    """One input article → one row per sentence (or one error row), for `flat_map`."""
    from stance.segment import guess_language, split_sentences

    article_id = str(row.get(names.id) or "")
    text = row.get(names.text)
    base = {"article_id": article_id, "sentence_index": -1, "start": -1, "end": -1, "text": "", "lang": None}
    if not isinstance(text, str) or not text.strip():
        return [base | {"error": f"missing or empty text field '{names.text}'"}]
    lang = row.get(names.lang) or guess_language(text)
    sentences = split_sentences(text, lang)
    if not sentences:
        return [base | {"lang": lang, "error": "empty article: no sentences"}]
    return [
        {"article_id": article_id, "sentence_index": i, "start": s.start, "end": s.end, "text": s.text, "lang": lang}
        | {"error": ""}  # a string column throughout: Arrow turns an all-None column into NaN
        for i, s in enumerate(sentences)
    ]


def score_with_ray(
    inputs: Sequence[str],
    output_dir: str,
    model_dir: str | Path,
    concurrency: int = 1,
    batch_size: int = 256,
    names: FieldNames = DEFAULT_NAMES,
) -> None:
    """Score JSONL or Parquet articles with Ray Data and write Parquet files into `output_dir`."""
    import ray

    paths = list(inputs)
    parquet = all(str(p).endswith(".parquet") for p in paths)
    dataset = ray.data.read_parquet(paths) if parquet else ray.data.read_json(paths, lines=True)
    scored = dataset.flat_map(split_article, fn_kwargs={"names": names}).map_batches(
        RayScorer,
        fn_constructor_kwargs={"model_dir": str(Path(model_dir).resolve())},
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        batch_size=batch_size,
        batch_format="numpy",
    )
    scored.write_parquet(output_dir)
