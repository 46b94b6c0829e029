"""A small client for OpenAI-compatible chat-completions endpoints (vLLM, `longvila serve`, hosted APIs).

Standard library only (urllib). Client-side rate limit (requests per second); timeouts, HTTP 429 / 5xx,
connection errors and malformed JSON are retried with exponential backoff (honouring Retry-After), then
raised as `EndpointError` for the caller to count. Other HTTP errors (400, 401, 404: a wrong URL, key or
model) are raised at once, with the server's message.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request

import numpy as np

RETRYABLE = {408, 409, 429, 500, 502, 503, 504}
FATAL = {401, 403, 404}
MAX_RETRY_AFTER = 60.0


class EndpointError(RuntimeError):
    """The endpoint failed after all retries (or with a non-retryable error) for this request."""


class EndpointConfigError(ValueError):
    """The endpoint refuses every request (wrong URL, key or model): fix the configuration."""


def _content_text(content) -> str:
    """The reply's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return "".join(str(p.get("text", "")) for p in content if p.get("type", "text") == "text")
    raise TypeError(f"message content is {type(content).__name__}")


def image_data_url(frame: np.ndarray) -> str:
    """uint8 RGB [H, W, 3] -> a PNG data URL for an `image_url` content part."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def user_message(text: str, frames: list[np.ndarray] | None = None) -> dict:
    parts = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": image_data_url(f)}} for f in (frames or [])]
    return {"role": "user", "content": parts if frames else text}


class ChatClient:
    """POST <url>/chat/completions with retries and a rate limit; `complete(messages) -> (text, raw)`."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.key = os.environ.get(cfg.api_key_env, "")
        self._lock = threading.Lock()
        self._next = 0.0
        self.stats = {"requests": 0, "retries": 0}

    def _wait_turn(self) -> None:
        with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + 1.0 / self.cfg.requests_per_second
        if wait > 0:
            time.sleep(wait)

    def _post(self, body: dict) -> dict:
        req = urllib.request.Request(self.cfg.url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.key}"} if self.key else {})})
        with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def complete(self, messages: list[dict], max_tokens: int, temperature: float = 0.0) -> tuple[str, dict]:
        body = {"model": self.cfg.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        delay, last = self.cfg.backoff, "no attempt"
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                time.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_AFTER)
            self._wait_turn()
            self.stats["requests"] += 1
            try:
                raw = self._post(body)
                return _content_text(raw["choices"][0]["message"]["content"] or ""), raw
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:300]
                if e.code in FATAL:
                    raise EndpointConfigError(f"HTTP {e.code} from {self.cfg.url}: {detail} (check "
                                              f"endpoint.url, endpoint.model and ${self.cfg.api_key_env})") from e
                if e.code not in RETRYABLE:
                    raise EndpointError(f"HTTP {e.code} from {self.cfg.url}: {detail}") from e
                retry_after = e.headers.get("Retry-After") if e.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = min(max(delay, float(retry_after)), MAX_RETRY_AFTER)
                last = f"HTTP {e.code}: {detail}"
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                last = f"{type(e).__name__}: {e}"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError, UnicodeDecodeError) as e:
                last = f"malformed response: {type(e).__name__}: {e}"
        raise EndpointError(f"{self.cfg.url}: gave up after {self.cfg.retries + 1} attempts; last: {last}")
