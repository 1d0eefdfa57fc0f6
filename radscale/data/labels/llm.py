"""LLM report labeler against any OpenAI-compatible endpoint (POST {base_url}/chat/completions).

The study labels reports with an LLM (19 findings + 11 lines/tubes, F1 ≈ 0.94, RECIPES.md "Labels"); the
exact prompt is unpublished, so ours is versioned (`prompt_version`) and its hash is part of the cache key.
The answer is constrained by a JSON schema (each label → positive | negative | uncertain | not_mentioned),
validated here, and retried when invalid. Standard library HTTP only. Report text is sent to the endpoint and
nowhere else: errors name the report id, the cache stores sha256(report) → answer.
"""
from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from radscale.data.labels.cache import LabelCache, report_hash
from radscale.data.vocab import DEFAULT_VOCABULARY, Vocabulary
from radscale.errors import RadscaleError

ANSWER_VALUES: dict[str, int | None] = {"positive": 1, "negative": 0, "uncertain": -1, "not_mentioned": None}
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

PROMPTS: dict[str, str] = {
    "v1": (
        "You label chest X-ray radiology reports. For every label, answer with exactly one of: "
        "\"positive\" (the report states it is present), \"negative\" (the report states it is absent, resolved "
        "or removed), \"uncertain\" (hedged: possible, probable, likely, cannot exclude, may represent, versus, "
        "suspicious for), \"not_mentioned\" (the report does not address it). Use the FINDINGS and IMPRESSION "
        "sections; when they disagree, follow the IMPRESSION; ignore INDICATION, HISTORY and COMPARISON. "
        "Lines and tubes: answer a position label only when the report states the device's position; for one "
        "stated device position that label is positive and the device's other position labels negative; a "
        "removed or absent device makes all its labels negative. An endotracheal tube tip 3-7 cm above the "
        "carina is normal, 1-3 cm or 7-10 cm borderline, at or below the carina, in a bronchus or the esophagus "
        "abnormal. A nasogastric tube tip below the diaphragm in the stomach is normal, at the gastroesophageal "
        "junction or in the distal esophagus borderline, coiled in the esophagus or in the airway abnormal, and "
        "incompletely imaged when its tip is not visible. A central venous catheter tip in the superior vena "
        "cava or at the cavoatrial junction is normal, in the brachiocephalic vein or right atrium borderline, "
        "directed into the jugular, subclavian or azygos vein or deep in the heart abnormal. "
        "Support devices: any line, tube, catheter, pacemaker or drain. Labels:\n{labels}"
    ),
}


@dataclass
class LLMStats:
    """Counters for logs (counts only, never text)."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0


class TokenBucket:
    """At most `rate` acquisitions per second on average, bursts up to `capacity`; clock and sleep injectable."""

    def __init__(self, rate: float, capacity: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0 or capacity < 1:
            raise RadscaleError(f"TokenBucket: rate must be > 0 and capacity >= 1 (got {rate}, {capacity})")
        self.rate, self.capacity, self._clock, self._sleep = rate, capacity, clock, sleep
        self._tokens, self._last = capacity, clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is available; returns the seconds waited."""
        waited = 0.0
        with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                wait = (1 - self._tokens) / self.rate
                self._sleep(wait)
                waited += wait


def answer_schema(vocabulary: Vocabulary) -> dict:
    """JSON schema of one answer: every label required, one of ANSWER_VALUES."""
    return {
        "type": "object",
        "properties": {label: {"type": "string", "enum": list(ANSWER_VALUES), "description": vocabulary.display(label)}
                       for label in vocabulary.labels},
        "required": list(vocabulary.labels),
        "additionalProperties": False,
    }


def system_prompt(vocabulary: Vocabulary, prompt_version: str = "v1") -> str:
    if prompt_version not in PROMPTS:
        raise RadscaleError(f"LLM labeler: unknown prompt_version {prompt_version!r} (known: {sorted(PROMPTS)})")
    return PROMPTS[prompt_version].format(
        labels="\n".join(f"- {label}: {vocabulary.display(label)}" for label in vocabulary.labels))


def validate_answer(answer: object, vocabulary: Vocabulary) -> dict[str, str]:
    """The answer as {label: value}; ValueError with a reason that never quotes the answer's free text."""
    if not isinstance(answer, dict):
        raise ValueError("answer is not a JSON object")
    for label in vocabulary.labels:
        if label not in answer:
            raise ValueError(f"missing label {label!r}")
        if answer[label] not in ANSWER_VALUES:
            raise ValueError(f"label {label!r} has a value outside {list(ANSWER_VALUES)}")
    extra = [key for key in answer if key not in vocabulary.labels]
    if extra:
        raise ValueError(f"{len(extra)} unexpected keys")
    return {label: answer[label] for label in vocabulary.labels}


class _Retry(Exception):
    def __init__(self, reason: str, wait_s: float | None = None):
        super().__init__(reason)
        self.reason, self.wait_s = reason, wait_s


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class LLMLabeler:
    """`label(text, report_id)` → {label: 1 | 0 | -1 | None}, cached, rate-limited, retried."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", prompt_version: str = "v1",
                 cache_path: str | Path | None = None, requests_per_second: float | None = 2.0, max_retries: int = 5,
                 timeout_s: float = 60.0, vocabulary: Vocabulary = DEFAULT_VOCABULARY, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, temperature: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if not base_url.startswith(("http://", "https://")) or max_retries < 0:
            raise RadscaleError(f"LLM labeler: base_url must be http(s) and max_retries >= 0 (got {base_url!r}, "
                                f"{max_retries})")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.prompt_version, self.vocabulary = model, prompt_version, vocabulary
        self.max_retries, self.timeout_s, self.temperature = max_retries, timeout_s, temperature
        self.backoff_s, self.max_backoff_s, self._sleep = backoff_s, max_backoff_s, sleep
        self._api_key = os.environ.get(api_key_env) or None  # local endpoints need none; never logged
        self._system = system_prompt(vocabulary, prompt_version)
        self._schema = answer_schema(vocabulary)
        self.prompt_sha256 = hashlib.sha256(
            json.dumps({"system": self._system, "schema": self._schema}, sort_keys=True).encode()).hexdigest()
        self.cache = LabelCache(cache_path if cache_path is not None else ":memory:")
        self.limiter = TokenBucket(requests_per_second, 1.0, clock, sleep) if requests_per_second else None
        self.stats = LLMStats()

    def __repr__(self) -> str:
        return f"LLMLabeler(url={self.url!r}, model={self.model!r}, prompt_version={self.prompt_version!r})"

    def label(self, text: str, report_id: str = "?") -> dict[str, int | None]:
        key = (report_hash(text), self.prompt_version, self.prompt_sha256, self.model)
        answer = self.cache.get(*key)
        if answer is not None:
            try:
                answer = validate_answer(answer, self.vocabulary)
                self.stats.cache_hits += 1
            except ValueError:
                answer = None
        if answer is None:
            answer = self._ask(text, report_id)
            self.cache.put(*key, answer)
        return {label: ANSWER_VALUES[value] for label, value in answer.items()}

    def __call__(self, text: str) -> dict[str, int | None]:
        return self.label(text)

    def close(self) -> None:
        self.cache.close()

    def _request_body(self, text: str) -> bytes:
        return json.dumps({
            "model": self.model, "temperature": self.temperature,
            "messages": [{"role": "system", "content": self._system}, {"role": "user", "content": text}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "report_labels", "strict": True, "schema": self._schema}},
        }).encode("utf-8")

    def _ask(self, text: str, report_id: str) -> dict[str, str]:
        body, reason = self._request_body(text), ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            if self.limiter is not None:
                self.limiter.acquire()
            try:
                return self._attempt(body, report_id)
            except _Retry as retry:
                reason = retry.reason
                if attempt < self.max_retries:
                    backoff = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
                    self._sleep(min(self.max_backoff_s, retry.wait_s) if retry.wait_s is not None else backoff)
        raise RadscaleError(f"LLM labeler: report {report_id!r} failed after {self.max_retries + 1} attempts "
                            f"({reason}) at {self.url}")

    def _attempt(self, body: bytes, report_id: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.stats.calls += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            err.close()  # the body may echo the request; it is never read into a message
            if err.code in _RETRY_STATUS:
                raise _Retry(f"HTTP {err.code}", _retry_after(err.headers.get("Retry-After"))) from None
            raise RadscaleError(f"LLM labeler: HTTP {err.code} from {self.url} for report {report_id!r}") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", err)
            raise _Retry(f"{type(reason).__name__}" if not isinstance(reason, str) else "connection error") from None
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retry("malformed response") from None
        try:
            parsed = json.loads(_strip_fence(content))
        except (ValueError, TypeError, AttributeError):
            raise _Retry("answer is not JSON") from None
        try:
            return validate_answer(parsed, self.vocabulary)
        except ValueError as err:  # validate_answer's reasons name labels, never quote the answer
            raise _Retry(f"invalid answer: {err}") from None


def _strip_fence(content: str) -> str:
    """Some servers wrap JSON in a Markdown fence despite the schema."""
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text
