"""LLM labeler against a local OpenAI-compatible server (radscale/data/labels/llm.py, cache.py).

The server answers with the rule-based labeler's labels for the user message, so a correct client reproduces
label_report exactly; scripted failures exercise retries. Waiting is done by a fake sleep, never for real.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest

from radscale.data.labels.apply import label_table
from radscale.data.labels.cache import LabelCache, report_hash
from radscale.data.labels.llm import ANSWER_VALUES, LLMLabeler, TokenBucket, answer_schema, validate_answer
from radscale.data.labels.rules import label_report
from radscale.data.vocab import DEFAULT_VOCABULARY, Vocabulary
from radscale.errors import RadscaleError

TO_ANSWER = {value: name for name, value in ANSWER_VALUES.items()}
REPORTS = ["FINDINGS: Small right pleural effusion. IMPRESSION: Possible pneumonia.",
           "No pneumothorax. ETT 4 cm above the carina. NG tube coiled in the esophagus.",
           "Moderate cardiomegaly with mild pulmonary edema."]


class FakeClock:
    def __init__(self):
        self.now, self.sleeps = 100.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Server:
    """ThreadingHTTPServer on 127.0.0.1:0; `script` holds the next responses ("429", "500", "bad_json", ...)."""

    def __init__(self):
        self.script: list[str] = []
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output (and report text) off stderr
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                action = owner.script.pop(0) if owner.script else "ok"
                if action == "sleep":
                    time.sleep(0.5)
                if action in ("429", "500", "401"):
                    self.send_response(int(action))
                    if action == "429":
                        self.send_header("Retry-After", "7")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                user = next(m["content"] for m in body["messages"] if m["role"] == "user")
                wanted = body["response_format"]["json_schema"]["schema"]["properties"]
                answer = {k: TO_ANSWER[v] for k, v in label_report(user).items() if k in wanted}
                content = {"bad_json": "{not json", "bad_schema": json.dumps({"edema": "maybe"})}.get(
                    action, json.dumps(answer))
                raw = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def make(server, fake, **kw) -> LLMLabeler:
    kw.setdefault("requests_per_second", None)
    return LLMLabeler(server.url, "test-model", clock=fake.clock, sleep=fake.sleep, timeout_s=5, **kw)


def test_labels_match_rules_and_request_follows_openai_schema(server, monkeypatch):
    monkeypatch.setenv("RADSCALE_TEST_KEY", "sk-test-123")
    llm = make(server, FakeClock(), api_key_env="RADSCALE_TEST_KEY")
    for i, text in enumerate(REPORTS):
        assert llm.label(text, f"r{i}") == label_report(text)
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test-123"
    fmt = req["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == answer_schema(DEFAULT_VOCABULARY)
    assert fmt["json_schema"]["schema"]["properties"]["edema"]["enum"] == [
        "positive", "negative", "uncertain", "not_mentioned"]
    assert "sk-test" not in repr(llm)
    assert (llm.stats.calls, llm.stats.retries, llm.stats.cache_hits) == (3, 0, 0)


def test_retries_on_429_500_and_invalid_answers(server):
    fake = FakeClock()
    llm = make(server, fake, backoff_s=0.5, max_retries=4)
    server.script = ["429", "500", "bad_json", "bad_schema"]
    assert llm.label(REPORTS[1], "r1") == label_report(REPORTS[1])
    assert len(server.requests) == 5 and llm.stats.retries == 4
    # Retry-After honoured on the 429; exponential backoff (0.5 * 2**attempt) otherwise
    assert fake.sleeps == [7.0, 1.0, 2.0, 4.0]


def test_timeout_is_retried(server):
    fake = FakeClock()
    llm = LLMLabeler(server.url, "m", timeout_s=0.1, requests_per_second=None, clock=fake.clock, sleep=fake.sleep)
    server.script = ["sleep"]
    assert llm.label(REPORTS[0], "r0") == label_report(REPORTS[0])
    assert llm.stats.retries == 1


def test_failure_message_is_one_line_with_id_and_no_text(server):
    fake = FakeClock()
    llm = make(server, fake, max_retries=2)
    server.script = ["bad_json"] * 3
    with pytest.raises(RadscaleError) as err:
        llm.label("Secret patient narrative with effusion.", "study-42")
    msg = str(err.value)
    assert "study-42" in msg and "3 attempts" in msg and "Secret" not in msg and "\n" not in msg
    server.script = ["401"]
    with pytest.raises(RadscaleError, match="HTTP 401") as err:
        llm.label("Secret patient narrative with effusion.", "study-43")
    assert "study-43" in str(err.value) and "Secret" not in str(err.value)
    assert len(server.requests) == 4  # a 401 is not retried


def test_cache_rerun_makes_no_calls_and_stores_no_text(server, tmp_path):
    path = tmp_path / "labels.sqlite"
    first = make(server, FakeClock(), cache_path=path)
    answers = [first.label(t, str(i)) for i, t in enumerate(REPORTS)]
    first.label(REPORTS[0], "dup")  # a duplicate report in the same run is a cache hit
    assert len(server.requests) == 3 and first.stats.cache_hits == 1
    first.cache.close()
    second = make(server, FakeClock(), cache_path=path)
    assert [second.label(t, str(i)) for i, t in enumerate(REPORTS)] == answers
    assert len(server.requests) == 3 and second.stats.calls == 0 and second.stats.cache_hits == 3
    # another model or prompt version is another key
    other = make(server, FakeClock(), cache_path=path, vocabulary=Vocabulary(findings=("edema",), tubes=()))
    assert other.label(REPORTS[2], "2") == {"edema": 1} and len(server.requests) == 4
    second.cache.close()
    other.cache.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT report_sha256, answer FROM answers").fetchall()
    assert {r[0] for r in rows} >= {report_hash(t) for t in REPORTS}
    blob = path.read_bytes() + json.dumps(rows).encode()
    assert b"cardiomegaly with mild" not in blob.lower() and b"carina" not in blob


def test_bad_configuration_is_refused():
    with pytest.raises(RadscaleError, match="base_url"):
        LLMLabeler("localhost:8000", "m")
    with pytest.raises(RadscaleError, match="prompt_version"):
        LLMLabeler("http://127.0.0.1:1/v1", "m", prompt_version="v0")


def test_cache_roundtrip_and_keys(tmp_path):
    with LabelCache(tmp_path / "c.sqlite") as cache:
        cache.put("h", "v1", "p", "m", {"edema": "positive"})
        assert cache.get("h", "v1", "p", "m") == {"edema": "positive"}
        assert cache.get("h", "v2", "p", "m") is None and cache.get("h", "v1", "p", "other") is None
        assert len(cache) == 1
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(RadscaleError, match="label cache"):
        LabelCache(tmp_path / "junk.sqlite")


def test_token_bucket_with_fake_clock():
    fake = FakeClock()
    bucket = TokenBucket(rate=2.0, capacity=1.0, clock=fake.clock, sleep=fake.sleep)
    waits = [bucket.acquire() for _ in range(5)]
    assert waits[0] == 0.0 and waits[1:] == pytest.approx([0.5] * 4)
    assert fake.now == pytest.approx(102.0)
    fake.now += 10.0  # idle time refills only up to the capacity
    assert bucket.acquire() == 0.0 and bucket.acquire() == pytest.approx(0.5)


def test_labeler_is_rate_limited(server):
    fake = FakeClock()
    llm = make(server, fake, requests_per_second=4.0)
    for i in range(5):
        llm.label(f"Small effusion number {i}.", str(i))
    assert fake.sleeps == pytest.approx([0.25] * 4) and fake.now == pytest.approx(101.0)


def test_validate_answer_reasons_do_not_quote_the_answer():
    vocab = Vocabulary(findings=("edema",), tubes=())
    assert validate_answer({"edema": "negative"}, vocab) == {"edema": "negative"}
    for bad in ([], {}, {"edema": "Secret text"}, {"edema": "positive", "Secret": "positive"}):
        with pytest.raises(ValueError) as err:
            validate_answer(bad, vocab)
        assert "Secret" not in str(err.value)


def test_label_table_with_the_llm_labeler_matches_rules(server):
    table = pa.table({"image_id": ["a", "b", "c", "d"], "report": [REPORTS[0], None, REPORTS[1], REPORTS[0]]})
    llm = make(server, FakeClock())
    assert label_table(table, labeler=llm).equals(label_table(table))
    assert len(server.requests) == 2
