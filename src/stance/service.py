"""The HTTP prediction service (BentoML 1.4): `/classify` for sentences, `/classify_article` for articles.

Start it with `stance serve` (or `bentoml serve stance.service:Stance`). The model is
either a directory (`STANCE_MODEL_DIR`) or a tag in the BentoML model store
(`STANCE_MODEL_TAG`, default `stance:latest`, imported with `stance import-model DIR`).

Limits are part of the request schema, so oversized input is a 400 (or a 413 for the
whole body) before it reaches the model. Each is set by an environment variable:

| variable | default | what |
|---|---|---|
| STANCE_MAX_SENTENCES | 256 | sentences per `/classify` request |
| STANCE_MAX_SENTENCE_CHARS | 2000 | characters per sentence |
| STANCE_MAX_ARTICLE_CHARS | 100000 | characters per article |
| STANCE_MAX_BODY_BYTES | 1048576 | bytes per request body (413 above it) |
| STANCE_BACKEND | auto | torch, onnx, onnx-int8, or auto (fastest with parity, see export-onnx) |
| STANCE_MAX_LATENCY_MS | 5000 | longest wait in the batching queue before a request is shed (503) |
| STANCE_WORKERS | 1 | worker processes; each runs cores / workers inference threads |
"""

from __future__ import annotations

import json
import os
from typing import Annotated

import bentoml
from bentoml.validators import ContentType
from pydantic import AfterValidator, BaseModel, Field

from stance.segment import article_dateline, guess_language, split_sentences
from stance.summary import summarize


def _limit(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


MAX_SENTENCES = _limit("STANCE_MAX_SENTENCES", 256)
MAX_SENTENCE_CHARS = _limit("STANCE_MAX_SENTENCE_CHARS", 2000)
MAX_ARTICLE_CHARS = _limit("STANCE_MAX_ARTICLE_CHARS", 100_000)
MAX_BODY_BYTES = _limit("STANCE_MAX_BODY_BYTES", 1_048_576)
MODEL_DIR = os.environ.get("STANCE_MODEL_DIR")
MODEL_TAG = os.environ.get("STANCE_MODEL_TAG", "stance:latest")
BACKEND = os.environ.get("STANCE_BACKEND", "auto")
MAX_LATENCY_MS = _limit("STANCE_MAX_LATENCY_MS", 5000)
WORKERS = _limit("STANCE_WORKERS", 1)
# Each worker gets its share of the cores, so several workers never oversubscribe them.
THREADS_PER_WORKER = max(1, (os.cpu_count() or 1) // WORKERS)


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must contain text, not only whitespace")
    return text


SentenceText = Annotated[str, Field(min_length=1, max_length=MAX_SENTENCE_CHARS), AfterValidator(_not_blank)]
ArticleText = Annotated[str, Field(min_length=1, max_length=MAX_ARTICLE_CHARS), AfterValidator(_not_blank)]


class HeadResult(BaseModel):
    """One head's label and the probability of every label."""

    label: str = Field(examples=["accusation"])
    probabilities: dict[str, float] = Field(examples=[{"accusation": 0.91, "denial": 0.03, "other": 0.06}])


class SentenceResult(BaseModel):
    """Both labels for one sentence; `truncated` is true when it exceeded the model's max length."""

    text: str
    claim_type: HeadResult
    stance: HeadResult
    truncated: bool


class ArticleSentence(SentenceResult):
    """A sentence of an article, with its [start, end) character offsets in `text`."""

    index: int
    start: int
    end: int


class ClaimRef(BaseModel):
    """A pointer to one of the article's sentences, with the claim type's probability."""

    index: int
    text: str
    confidence: float


class ArticleSummary(BaseModel):
    """Counts per label, and the most confident accusations and denials."""

    sentences: int
    claim_types: dict[str, int]
    stances: dict[str, int]
    critical_share: float
    top_accusations: list[ClaimRef]
    top_denials: list[ClaimRef]


class ArticleResult(BaseModel):
    """An article's sentences with offsets and labels, the title's labels, and a summary."""

    lang: str
    title: SentenceResult | None
    dateline: str | None
    sentences: list[ArticleSentence]
    summary: ArticleSummary


class BodySizeLimit:
    """ASGI middleware: answer 413 to bodies over `max_bytes`, before anything parses them."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._reject(send)

    async def _reject(self, send) -> None:
        body = json.dumps({"error": f"request body over {self.max_bytes} bytes (STANCE_MAX_BODY_BYTES)"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


@bentoml.service(name="stance", traffic={"timeout": 60, "max_concurrency": 128}, workers=WORKERS)
class Stance:
    """Sentence and article classification over one loaded :class:`stance.predict.Predictor`."""

    if not MODEL_DIR:
        model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        from stance.predict import Predictor

        self.predictor = Predictor(MODEL_DIR or self.model.path, backend=BACKEND, num_threads=THREADS_PER_WORKER)

    # The declared content type spares BentoML deriving it from the JSON schema of a list
    # output on every response (a quarter of the event loop's time under load).
    # max_latency_ms bounds the wait in the batching queue; requests that cannot make it are shed
    # with 503, so it sits well above the time of a full batch.
    @bentoml.api(batchable=True, max_batch_size=MAX_SENTENCES, max_latency_ms=MAX_LATENCY_MS)
    def classify(
        self,
        sentences: Annotated[
            list[SentenceText],
            Field(
                min_length=1,
                max_length=MAX_SENTENCES,
                examples=[["Russia's envoy accused Kyiv of arming the fighters.", "The ministry called it a fake."]],
            ),
        ],
    ) -> Annotated[list[SentenceResult], ContentType("application/json")]:
        """Label each sentence with a claim type and a stance, with every label's probability."""
        return [SentenceResult.model_validate(p.to_dict()) for p in self.predictor.predict(sentences)]

    @bentoml.api
    def classify_article(
        self,
        text: Annotated[
            ArticleText,
            Field(examples=["MOSCOW, Dec. 3. /TASS/. Russia accused Ukraine of arming the fighters. Kyiv denied it."]),
        ],
        title: Annotated[str | None, Field(max_length=MAX_SENTENCE_CHARS, examples=["Moscow accuses Kyiv"])] = None,
        lang: Annotated[str | None, Field(pattern=r"^[a-z]{2}$", examples=["en"])] = None,
    ) -> ArticleResult:
        """Split an article into sentences (with offsets), label each, and summarize the article."""
        language = lang or guess_language(text)
        sentences = split_sentences(text, language)
        with_title = [title] if title and title.strip() else []
        predictions = self.predictor.predict(with_title + [s.text for s in sentences])
        title_prediction = predictions.pop(0) if with_title else None
        article = [
            ArticleSentence(index=i, start=s.start, end=s.end, **p.to_dict())
            for i, (s, p) in enumerate(zip(sentences, predictions, strict=True))
        ]
        dateline = article_dateline(text)
        return ArticleResult(
            lang=language,
            title=SentenceResult.model_validate(title_prediction.to_dict()) if title_prediction else None,
            dateline=dateline.text if dateline else None,
            sentences=article,
            summary=ArticleSummary.model_validate(summarize(predictions, self.predictor.labels)),
        )


Stance.add_asgi_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
