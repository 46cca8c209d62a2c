"""A real local HTTP server speaking the OpenAI chat-completions protocol that misbehaves on
purpose (refuses, hangs, throttles, returns garbage). It tests our HTTP client's fault
handling; it is not a model and no test uses it for generation quality."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    def __init__(self) -> None:
        # behaviours for the next requests; default "ok". "429" / "503" may carry a
        # Retry-After value ("503:1", "429:<HTTP date>"); "hang" holds the answer 3 s, or as
        # long as asked ("hang:6"). Each request records its arrival time (monotonic and wall).
        self.script: deque[str] = deque()
        self.requests: list[dict] = []
        self.reply = '{"answer": "fine"}'
        # GET /server_info?config_format=json answers this (what a vLLM server in dev mode
        # reports, trimmed); None: 404, as any server without that endpoint
        self.server_info: object | None = None
        self.gets: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                server.gets.append(self.path)
                found = self.path == "/server_info?config_format=json"
                payload = json.dumps(server.server_info).encode()
                if not found or server.server_info is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(
                    {
                        "body": body,
                        "auth": self.headers.get("Authorization"),
                        "at": time.monotonic(),
                        "wall": time.time(),
                    }
                )
                mode = server.script.popleft() if server.script else "ok"
                mode, _, arg = mode.partition(":")
                if mode == "hang":
                    time.sleep(float(arg or 3))
                    mode = "ok"
                if mode in ("429", "503"):
                    self.send_response(int(mode))
                    retry_after = arg or ("0.2" if mode == "429" else "")
                    if retry_after:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if mode == "400":
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(b"bad request")
                    return
                payload = (
                    b"<html>garbage"
                    if mode == "garbage"
                    else json.dumps(
                        {
                            "choices": [
                                {"message": {"content": server.reply}, "finish_reason": "stop"}
                            ],
                            "usage": {"completion_tokens": 5, "prompt_tokens": 9},
                        }
                    ).encode()
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
