"""`longvila serve`: an OpenAI-compatible chat-completions server for a LongVILA checkpoint (or a plain LM).

    longvila serve --model results/init_model/tiny --port 8000
    curl localhost:8000/v1/chat/completions -d '{"model": "longvila", "messages": [...], "max_tokens": 32}'

POST /v1/chat/completions takes `messages` whose content is a string or a list of parts ({type: text} and
{type: image_url, image_url: {url: "data:image/...;base64,..."}}). The text of the user messages is the
prompt; the images are the media (one image -> <image>, several -> the frames of a video). Greedy decoding;
`max_tokens` is honoured, `temperature` is accepted and ignored. GET /v1/models lists the one model.
Requests are served one at a time (one model, one lock). For the stage-5 captioner and QA backends, and for
tests that need a real endpoint on 127.0.0.1.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def decode_data_url(url: str) -> np.ndarray:
    """A base64 image data URL -> uint8 RGB [H, W, 3]."""
    from PIL import Image

    if not url.startswith("data:image/") or ";base64," not in url:
        raise ValueError("image_url must be a base64 data URL (data:image/png;base64,...); remote URLs are not fetched")
    raw = base64.b64decode(url.split(";base64,", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def parse_messages(messages) -> tuple[str, list[np.ndarray]]:
    """(prompt text, images) from chat messages."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    texts, images = [], []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") != "user":
            continue
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else (content or [])
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            raise ValueError("message content must be a string or a list of {type, ...} parts")
        for p in parts:
            if p.get("type") == "text":
                texts.append(str(p.get("text", "")))
            elif p.get("type") == "image_url":
                images.append(decode_data_url((p.get("image_url") or {}).get("url", "")))
    if not texts and not images:
        raise ValueError("no user message with text or images")
    return "\n".join(texts), images


class Generator:
    """Loads the checkpoint once; `reply(prompt, images, max_tokens) -> text`."""

    def __init__(self, model_dir: str) -> None:
        from longvila.infer.single import load_for_inference

        self.model, self.tokenizer = load_for_inference(model_dir)
        self.lock = threading.Lock()

    def reply(self, prompt: str, images: list[np.ndarray], max_tokens: int) -> str:
        from longvila.infer.single import answer_frames, answer

        with self.lock:
            if images:
                return answer_frames(self.model, self.tokenizer, prompt, [np.stack(images)], max_tokens)[0]
            return answer(self.model, self.tokenizer, prompt, max_new_tokens=max_tokens)


def make_handler(generator: Generator, model_name: str):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):  # quiet: one line per request would flood the logs
            pass

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self._send(411, {"error": {"message": "send a JSON body with a valid Content-Length"}})
                return
            try:
                body = json.loads(self.rfile.read(int(length)))
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                prompt, images = parse_messages(body.get("messages"))
                max_tokens = int(body.get("max_tokens") or 64)
                if max_tokens < 1:
                    raise ValueError("max_tokens must be >= 1")
                if len({im.shape for im in images}) > 1:
                    raise ValueError("all images of one request must have the same size (they are video frames)")
            except (ValueError, TypeError, AttributeError, OSError, json.JSONDecodeError) as e:
                self._send(400, {"error": {"message": f"{type(e).__name__}: {e}", "type": "invalid_request_error"}})
                return
            try:
                text = generator.reply(prompt, images, max_tokens)
            except Exception as e:  # noqa: BLE001 - the client must get an answer, not a dropped connection
                self._send(500, {"error": {"message": f"generation failed: {type(e).__name__}: {e}"}})
                return
            self._send(200, {"id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion",
                             "created": int(time.time()), "model": model_name,
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop"}]})

    return Handler


def make_server(model_dir: str, host: str = "127.0.0.1", port: int = 8000,
                model_name: str = "longvila") -> ThreadingHTTPServer:
    """A ready server (call .serve_forever(); port 0 picks a free port: server.server_address[1])."""
    return ThreadingHTTPServer((host, port), make_handler(Generator(model_dir), model_name))
