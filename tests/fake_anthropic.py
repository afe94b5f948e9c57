"""A scripted stand-in for the Anthropic Messages API, for running the real ``claude`` CLI offline.

The client needs one endpoint: ``POST /v1/messages`` with ``"stream": true``, answered as
server-sent events (``message_start``, one ``content_block_*`` sequence per block,
``message_delta``, ``message_stop``). Every other request gets a short plain answer so the client
never waits on us.

Each session is told apart by its first user prompt: a script maps a marker found in that prompt
to the list of turns the "model" plays, in order. The turn to play is the number of assistant
messages already in the conversation, so a retried request plays the same turn again. A turn may
wait for a gate another session's progress opens (its request for a given turn arrived, which
means the tool call of the turn before it has finished, hooks included). Every ``tool_result``
the client sends back is recorded, so a test can assert what the model was told.

Deterministic by construction: no randomness, and gates (another session's progress, a file some
hook wrote) instead of sleeps.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GATE_TIMEOUT = 60.0


@dataclass
class Turn:
    """One model turn: tool calls (name, input) or a final text; optionally after a gate opens."""

    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    text: str = ""
    # A gate: "<marker>:<turn>" (that session asked for that turn), "<marker>:exit" (set by the
    # driver when that session's process ended) or "file:<path>" (that file exists).
    after: str | None = None


def tool(name: str, **tool_input: Any) -> Turn:
    return Turn(tools=[(name, tool_input)])


def say(text: str, after: str | None = None) -> Turn:
    return Turn(text=text, after=after)


@dataclass
class ToolResult:
    marker: str
    turn: int
    tool_use_id: str
    content: str
    is_error: bool


class Script:
    """The turns of every session, the gates between them, and what the client sent back."""

    def __init__(self, sessions: dict[str, list[Turn]]) -> None:
        self.sessions = sessions
        self.results: list[ToolResult] = []
        self.requests: list[dict[str, Any]] = []
        self.unmatched: list[str] = []
        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def gate(self, name: str) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(name, threading.Event())

    def results_of(self, marker: str) -> list[ToolResult]:
        with self._lock:
            return [r for r in self.results if r.marker == marker]

    def answer(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The content blocks to stream back for one request."""
        messages = body.get("messages") or []
        prompt = _text_of(messages[0]) if messages else ""
        marker = next((m for m in self.sessions if m in prompt), None)
        with self._lock:
            self.requests.append({"marker": marker, "messages": len(messages), "model": body.get("model")})
        if marker is None or not body.get("tools"):
            with self._lock:
                self.unmatched.append(prompt[:200])
            return [{"type": "text", "text": "ok"}]
        turn_index = sum(1 for m in messages if m.get("role") == "assistant")
        self._record_results(marker, turn_index, messages)
        self.gate(f"{marker}:{turn_index}").set()
        turns = self.sessions[marker]
        if turn_index >= len(turns):
            return [{"type": "text", "text": "done"}]
        turn = turns[turn_index]
        if turn.after is not None and not self._wait(turn.after):
            return [{"type": "text", "text": f"gate {turn.after} never opened"}]
        if turn.tools:
            return [{"type": "tool_use", "id": f"toolu_{marker}_{turn_index}_{i}", "name": name, "input": args}
                    for i, (name, args) in enumerate(turn.tools)]
        return [{"type": "text", "text": turn.text}]

    def _wait(self, gate: str) -> bool:
        if not gate.startswith("file:"):
            return self.gate(gate).wait(GATE_TIMEOUT)
        deadline = time.monotonic() + GATE_TIMEOUT
        while not os.path.exists(gate[len("file:"):]):  # written by a process outside this server
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _record_results(self, marker: str, turn_index: int, messages: list[dict[str, Any]]) -> None:
        """Record each tool_result not seen before (the whole conversation is resent every turn)."""
        with self._lock:
            seen = {(r.marker, r.tool_use_id) for r in self.results}
            for message in messages:
                content = message.get("content") if message.get("role") == "user" else None
                for block in content if isinstance(content, list) else []:
                    if not isinstance(block, dict) or block.get("type") != "tool_result":
                        continue
                    if (marker, str(block.get("tool_use_id"))) in seen:
                        continue
                    self.results.append(ToolResult(marker, turn_index - 1, str(block.get("tool_use_id")),
                                                   _text_of(block), bool(block.get("is_error"))))


def _text_of(item: Any) -> str:
    """The text inside a message or a tool_result block (a string or a list of blocks)."""
    content = item.get("content") if isinstance(item, dict) else item
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(part) if part.get("type") != "text" else str(part.get("text", ""))
                         for part in content if isinstance(part, dict))
    return ""


def _events(blocks: list[dict[str, Any]], model: str, message_id: str) -> list[tuple[str, dict[str, Any]]]:
    stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    usage = {"input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": usage}})]
    for index, block in enumerate(blocks):
        start: dict[str, Any]
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"output_tokens": 5}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


class _Handler(BaseHTTPRequestHandler):
    server: FakeAnthropic
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if path.endswith("/count_tokens"):
            return self._json({"input_tokens": 10})
        if not path.endswith("/v1/messages"):
            return self._json({"ok": True})
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        blocks = self.server.script.answer(body)
        model = str(body.get("model") or "claude-fake")
        if not body.get("stream"):
            stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
            return self._json({"id": self.server.next_message_id(), "type": "message", "role": "assistant", "model": model,
                               "content": blocks, "stop_reason": stop, "stop_sequence": None,
                               "usage": {"input_tokens": 10, "output_tokens": 5}})
        payload = b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                           for name, data in _events(blocks, model, self.server.next_message_id()))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._json({"data": []})

    def _json(self, value: object) -> None:
        data = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeAnthropic(ThreadingHTTPServer):
    """The server, on 127.0.0.1 and a free port; ``start()`` serves from a daemon thread."""

    daemon_threads = True

    def __init__(self, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    def next_message_id(self) -> str:
        """A fresh id per answer: the client merges consecutive assistant messages sharing an id."""
        return f"msg_fake_{next(self._ids):06d}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> FakeAnthropic:
        self._thread = threading.Thread(target=self.serve_forever, name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
