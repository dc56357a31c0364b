"""A loopback HTTP server (127.0.0.1) that replays scripted responses, for driving the real
Anthropic and OpenAI SDK clients through their wire protocols offline."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Scripted:
    status: int = 200
    body: bytes | dict = b""
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0


class LoopbackServer:
    """``responses`` are served in order (the last one repeats); ``requests`` records each
    request's path, headers and JSON body."""

    def __init__(self, responses: list[Scripted]):
        self.responses, self.requests = list(responses), []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                owner.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "json": json.loads(body or b"null")})
                spec = owner.responses.pop(0) if len(owner.responses) > 1 else owner.responses[0]
                if spec.delay_s:
                    time.sleep(spec.delay_s)
                payload = json.dumps(spec.body).encode() if isinstance(spec.body, dict) else spec.body
                try:
                    self.send_response(spec.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for key, value in spec.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def anthropic_message(text: str, input_tokens: int = 11, output_tokens: int = 7) -> dict:
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}


def anthropic_error(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


def openai_completion(text: str, prompt_tokens: int = 13, completion_tokens: int = 5) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "local-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def openai_error(message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "code": None, "param": None}}
