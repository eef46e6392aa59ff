"""The HTTP service on a real BentoML server on 127.0.0.1, with a tiny trained model."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import REPO

LIMITS = {
    "STANCE_MAX_SENTENCES": "8",
    "STANCE_MAX_SENTENCE_CHARS": "500",
    "STANCE_MAX_ARTICLE_CHARS": "5000",
    "STANCE_MAX_BODY_BYTES": "200000",
}
ARTICLE = (
    "MOSCOW, Dec. 3. /TASS/. Russia's envoy accused Kyiv of supplying drones to the fighters.\n\n"
    "The Foreign Ministry in Kyiv dismissed the claim as “a crude fabrication”. "
    "Syrian troops pushed the factions back about 10 kilometres from Hama, the Observatory said.\n"
    "Show More"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def _start(command: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
    except Exception:
        process.kill()
        raise
    return process, url


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def server(tiny_trained_model: Path):
    """One real server per test session, started the way users start it: `stance serve --model DIR`."""
    env = dict(os.environ) | LIMITS
    stance_cli = str(Path(sys.executable).with_name("stance"))
    process, url = _start([stance_cli, "serve", "--model", str(tiny_trained_model)], env)
    yield url
    _stop(process)


def post(url: str, path: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}{path}", content=content, headers={"content-type": "application/json"}, timeout=60)


def test_classify_labels_each_sentence_in_order(server: str, tiny_trained_model: Path) -> None:
    labels = json.loads((tiny_trained_model / "stance.json").read_text())["labels"]
    sentences = ["Russia accused Ukraine of arming the fighters.", "The ministry called the claim a fake.", "Hi"]
    response = post(server, "/classify", {"sentences": sentences})
    assert response.status_code == 200, response.text
    results = response.json()
    assert [r["text"] for r in results] == sentences
    for result in results:
        for head in ("claim_type", "stance"):
            probabilities = result[head]["probabilities"]
            assert set(probabilities) == set(labels[head])
            assert sum(probabilities.values()) == pytest.approx(1, abs=1e-4)
            assert result[head]["label"] == max(probabilities, key=probabilities.get)
        assert result["truncated"] is False


def test_long_sentences_are_truncated_and_flagged(server: str) -> None:
    long = " ".join(["the army said the town was shelled"] * 12)  # far past the model's 32 tokens
    results = post(server, "/classify", {"sentences": [long, "Short one."]}).json()
    assert [r["truncated"] for r in results] == [True, False]


def test_classify_article(server: str) -> None:
    response = post(server, "/classify_article", {"text": ARTICLE, "title": "Moscow accuses Kyiv", "lang": "en"})
    assert response.status_code == 200, response.text
    article = response.json()
    assert article["dateline"] == "MOSCOW, Dec. 3. /TASS/."
    assert article["title"]["text"] == "Moscow accuses Kyiv"
    texts = [s["text"] for s in article["sentences"]]
    assert texts == [
        "Russia's envoy accused Kyiv of supplying drones to the fighters.",
        "The Foreign Ministry in Kyiv dismissed the claim as “a crude fabrication”.",
        "Syrian troops pushed the factions back about 10 kilometres from Hama, the Observatory said.",
        "Show More",
    ]
    for i, sentence in enumerate(article["sentences"]):
        assert sentence["index"] == i
        assert ARTICLE[sentence["start"] : sentence["end"]] == sentence["text"]
    summary = article["summary"]
    assert summary["sentences"] == 4
    assert sum(summary["claim_types"].values()) == 4 and sum(summary["stances"].values()) == 4
    for key, label in (("top_accusations", "accusation"), ("top_denials", "denial")):
        expected = [s for s in article["sentences"] if s["claim_type"]["label"] == label]
        assert len(summary[key]) == min(3, len(expected))
        confidences = [ref["confidence"] for ref in summary[key]]
        assert confidences == sorted(confidences, reverse=True)


def test_article_language_is_guessed_when_not_given(server: str) -> None:
    text = "اتهم المندوب الروسي أوكرانيا بتسليح المقاتلين. هل هذا صحيح؟ نفت كييف ذلك."
    article = post(server, "/classify_article", {"text": text}).json()
    assert article["lang"] == "ar"
    assert [s["text"] for s in article["sentences"]] == [
        "اتهم المندوب الروسي أوكرانيا بتسليح المقاتلين.",
        "هل هذا صحيح؟",
        "نفت كييف ذلك.",
    ]


def test_health_metrics_and_openapi_docs(server: str) -> None:
    for path in ("/healthz", "/livez", "/readyz", "/metrics"):
        assert httpx.get(f"{server}{path}").status_code == 200, path
    spec = httpx.get(f"{server}/docs.json").json()
    assert {"/classify", "/classify_article"} <= set(spec["paths"])
    text = json.dumps(spec)
    assert "accused Kyiv of arming the fighters" in text  # the request example is in the schema
    assert '"maxItems": 8' in text and '"maxLength": 500' in text  # limits are documented in the schema


BAD_REQUESTS = [
    ("/classify", b'{"sentences": ["unterminated', 400, "Invalid JSON"),
    ("/classify", b'{"sentences": ["\xff\xfe bad bytes"]}', 400, "Invalid JSON"),
    ("/classify", {"sentences": "one string"}, 400, "valid array"),
    ("/classify", {"sentences": [1, 2]}, 400, "valid string"),
    ("/classify", {"sentences": None}, 400, "valid array"),
    ("/classify", {}, 400, "Field required"),
    ("/classify", [], 400, ""),
    ("/classify", {"sentences": []}, 400, "at least 1 item"),
    ("/classify", {"sentences": ["ok", "  \n\t "]}, 400, "not only whitespace"),
    ("/classify", {"sentences": [""]}, 400, "at least 1 character"),
    ("/classify", {"sentences": ["s"] * 9}, 400, "at most 8 items"),
    ("/classify", {"sentences": ["x" * 501]}, 400, "at most 500 characters"),
    ("/classify", {"sentences": ["x" * 250_000]}, 413, "request body over 200000 bytes"),
    ("/classify_article", {"text": "   "}, 400, "not only whitespace"),
    ("/classify_article", {"text": "x" * 5001}, 400, "at most 5000 characters"),
    ("/classify_article", {"text": 5}, 400, "valid string"),
    ("/classify_article", {"text": "Fine.", "lang": "english"}, 400, "should match pattern"),
    ("/classify_article", {"title": "no text"}, 400, "Field required"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD_REQUESTS)
def test_bad_requests_are_4xx_with_a_message(server: str, path: str, body, status: int, message: str) -> None:
    response = post(server, path, body)
    assert response.status_code == status, response.text
    assert message in response.text


def test_server_still_answers_after_bad_input(server: str) -> None:
    for path, body, _, _ in BAD_REQUESTS:
        post(server, path, body)
    response = post(server, "/classify", {"sentences": ["Still here."]})
    assert response.status_code == 200


def test_burst_of_concurrent_requests_all_answered(server: str) -> None:
    requests = [[f"Request {i}: the army reported {j} attacks." for j in range(1 + i % 4)] for i in range(64)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda sentences: post(server, "/classify", {"sentences": sentences}), requests))
    assert [r.status_code for r in responses] == [200] * len(requests)
    assert [[item["text"] for item in r.json()] for r in responses] == requests


def test_readme_curl_example_works_as_written(server: str) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```bash\n(curl [^`]*?/classify_article[^`]*?)\n```", readme)
    assert match, "README has no curl example for /classify_article"
    command = match.group(1).replace("http://127.0.0.1:3000", server)
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["sentences"] >= 1


def test_bentoml_build_and_serve_the_bento(tiny_trained_model: Path, tmp_path: Path) -> None:
    """Import the model into a temporary store, `bentoml build` offline, and serve the bento."""
    env = dict(os.environ) | {"BENTOML_HOME": str(tmp_path / "bentoml")}
    stance_cli = str(Path(sys.executable).with_name("stance"))
    bentoml_cli = str(Path(sys.executable).with_name("bentoml"))
    tag = subprocess.run(
        [stance_cli, "import-model", str(tiny_trained_model)], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tag.startswith("stance:")
    build = subprocess.run([bentoml_cli, "build"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    assert list((tmp_path / "bentoml" / "bentos" / "stance").iterdir())
    process, url = _start(
        [bentoml_cli, "serve", "stance:latest"], {k: v for k, v in env.items() if k != "STANCE_MODEL_DIR"}
    )
    try:
        response = post(url, "/classify", {"sentences": ["Kyiv denied it."]})
        assert response.status_code == 200 and response.json()[0]["text"] == "Kyiv denied it."
    finally:
        _stop(process)


def test_serve_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    stance_cli = str(Path(sys.executable).with_name("stance"))
    env = dict(os.environ) | {"BENTOML_HOME": str(tmp_path / "empty-store")}
    env.pop("STANCE_MODEL", None)
    missing = subprocess.run(
        [stance_cli, "serve", "--model", "stance:nope"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert missing.returncode == 2
    assert "no model directory or BentoML model 'stance:nope'" in missing.stderr
    not_a_model = subprocess.run(
        [stance_cli, "serve", "--model", str(tmp_path)], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert not_a_model.returncode == 2 and "is not a stance model directory" in not_a_model.stderr
