"""A recording HTTP proxy in front of vLLM: forwards every request and writes each chat-completions request body, as
received, to one JSON-lines file — so a test can compare what a caller (Letta) sent the model with what we render.

    with RecordingProxy(vllm.url, tmp_path / "requests.jsonl") as proxy:
        ... point the caller at proxy.url ...
        first = proxy.requests()[0]  # the parsed body of the first /v1/chat/completions request

It is the fault proxy (testworld/fault_proxy.py) with no faults planned; requests go upstream as they came, their
key included (Letta sends its own ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from void_pipeline.testworld.fault_proxy import FaultPlan, FaultProxy

CHAT_COMPLETIONS = "/v1/chat/completions"


@dataclass(frozen=True)
class Exchange:
    """One recorded request and the upstream's answer."""

    path: str
    request: Any  # the body parsed as JSON (the text where it is not JSON)
    status: int
    response: Any  # the answer parsed as JSON (the text where it is not, e.g. a stream of server-sent events)


def parsed(body: bytes) -> Any:
    text = body.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


class RecordingProxy(FaultProxy):
    """Forwards everything to ``upstream``; records requests to ``record_paths`` (path without the query)."""

    def __init__(
        self,
        upstream: str,
        log_path: Path,
        record_paths: tuple[str, ...] = (CHAT_COMPLETIONS,),
    ) -> None:
        super().__init__(upstream, FaultPlan())
        self.log_path = log_path
        self.record_paths = record_paths
        self.exchanges: list[Exchange] = []
        self._record_lock = threading.Lock()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")

    def forwarding(self, path: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        """Written before it is forwarded: a request the upstream fails on is recorded too."""
        if path.split("?", 1)[0] in self.record_paths:
            with self._record_lock, self.log_path.open("a") as log:
                log.write(json.dumps(parsed(body), ensure_ascii=False) + "\n")
        return headers

    def answered(self, path: str, body: bytes, status: int, content: bytes) -> None:
        route = path.split("?", 1)[0]
        if route in self.record_paths:
            with self._record_lock:
                self.exchanges.append(Exchange(route, parsed(body), status, parsed(content)))

    def requests(self) -> list[Any]:
        """The recorded request bodies, in the order they arrived (read back from the log)."""
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def __enter__(self) -> RecordingProxy:
        self.start()
        return self
