"""Where every stage keeps its files: the one place that joins folder names.

::

    <data>/                                  $VOID_PIPELINE_DATA, default <repo>/.data
      agents/<agent name>/                   one folder per configured agent name (VOID_AGENT), whatever its DID
        agent.json                           who the name resolved to (DID, handle, PDS, PLC), written by ingest
        ingest/                              raw_records/, cars/, listing/, thread_context/   (IngestPaths)
        curate/                              filtered_records/, context_window/, chat_dataset/<format>/
        train/<run>/                         one folder per training run; train/latest.json names the newest
                                             finished one (written atomically when it completes)
        evaluate/, serve/                    the stages to come
      identity/did-documents-<plc>.json      DID documents cached per PLC directory
      mlflow/  models/  devnet/  dagster_home/

A new stage gets a property on ``AgentLayout`` and a folder of its own under the agent; nothing else joins names.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from void_pipeline.lib.files import write_text_atomic

AGENT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def agent_name_error(name: str) -> str | None:
    if AGENT_NAME.match(name):
        return None
    return f"{name!r} is not a valid agent name (lowercase letters, digits and '-', like void or void-demo)"


def default_agent_name(actor: str) -> str:
    """The name an agent's folder gets when none is configured: the handle's first label (void.comind.network →
    void), or the DID's identifier."""
    base = actor.removeprefix("@").rsplit(":", 1)[-1] if actor.startswith("did:") else actor.removeprefix("@")
    label = re.sub(r"[^a-z0-9-]", "-", base.split(".")[0].lower()).strip("-")
    return label[:63] or "agent"


@dataclass(frozen=True)
class AgentRecord:
    """Who an agent's name resolved to when ingest last ran: downstream stages read this, not the network."""

    name: str
    did: str
    handle: str | None
    pds_url: str
    plc_url: str
    resolved_at: str

    @classmethod
    def now(cls, name: str, did: str, handle: str | None, pds_url: str, plc_url: str) -> AgentRecord:
        return cls(name, did, handle, pds_url, plc_url, datetime.now(UTC).isoformat(timespec="seconds"))


@dataclass(frozen=True)
class IngestPaths:
    """One agent's export (lib/export.py, lib/threads.py)."""

    root: Path

    @property
    def cars(self) -> Path:
        return self.root / "cars"

    def records(self, collection: str) -> Path:
        return self.root / "raw_records" / f"{collection}.parquet"

    def rejected(self, collection: str) -> Path:
        return self.root / "raw_records" / f"{collection}.rejected.parquet"

    def state(self, collection: str) -> Path:
        return self.root / "raw_records" / f"{collection}.state.json"

    def writer_lock(self, collection: str) -> Path:
        """Held by the one process exporting ``collection`` (lib/files.acquire_owner)."""
        return self.root / "raw_records" / f"{collection}.lock"

    def listing(self, collection: str) -> Path:
        return self.root / "listing" / collection

    @property
    def thread_context(self) -> Path:
        return self.root / "thread_context" / "thread_context.parquet"

    @property
    def thread_context_lock(self) -> Path:
        return self.root / "thread_context" / "writer.lock"

    @property
    def post_cache(self) -> Path:
        return self.root / "thread_context" / "post_cache.jsonl"


@dataclass(frozen=True)
class CuratePaths:
    root: Path

    @property
    def filtered(self) -> Path:
        return self.root / "filtered_records"

    def filtered_records(self, collection: str) -> Path:
        return self.filtered / f"{collection}.parquet"

    def filtered_rejected(self, collection: str) -> Path:
        return self.filtered / f"{collection}.rejected.parquet"

    @property
    def context_window(self) -> Path:
        return self.root / "context_window"

    def context_variant(self, strategy: str) -> Path:
        return self.context_window / f"{strategy}.txt"

    @property
    def context_report(self) -> Path:
        return self.context_window / "report.json"

    @property
    def chat_datasets(self) -> Path:
        return self.root / "chat_dataset"

    def chat_dataset(self, fmt: str) -> Path:
        return self.chat_datasets / fmt


@dataclass(frozen=True)
class TrainPaths:
    root: Path

    def run(self, run_id: str) -> Path:
        return self.root / run_id

    @property
    def latest(self) -> Path:
        """The newest finished training run: {"run_dir", "adapter", "base_model", ...}, written when one completes."""
        return self.root / "latest.json"

    def write_latest(self, **fields: Any) -> None:
        write_text_atomic(self.latest, json.dumps(fields, indent=2))

    def read_latest(self) -> dict[str, Any] | None:
        if not self.latest.exists():
            return None
        try:
            loaded = json.loads(self.latest.read_text())
        except ValueError as err:
            raise ValueError(f"{self.latest} is not valid JSON ({err}): materialize lora_adapter again") from err
        return loaded if isinstance(loaded, dict) else None


@dataclass(frozen=True)
class AgentLayout:
    root: Path
    name: str

    @property
    def record_path(self) -> Path:
        return self.root / "agent.json"

    @property
    def ingest(self) -> IngestPaths:
        return IngestPaths(self.root / "ingest")

    @property
    def curate(self) -> CuratePaths:
        return CuratePaths(self.root / "curate")

    @property
    def train(self) -> TrainPaths:
        return TrainPaths(self.root / "train")

    @property
    def evaluate(self) -> Path:
        return self.root / "evaluate"

    @property
    def serve(self) -> Path:
        return self.root / "serve"

    def read_record(self) -> AgentRecord | None:
        if not self.record_path.exists():
            return None
        try:
            return AgentRecord(**json.loads(self.record_path.read_text()))
        except (ValueError, TypeError):
            return None

    def write_record(self, record: AgentRecord) -> None:
        write_text_atomic(self.record_path, json.dumps(asdict(record), indent=2))


@dataclass(frozen=True)
class DataLayout:
    root: Path

    def agent(self, name: str) -> AgentLayout:
        if error := agent_name_error(name):
            raise ValueError(error)
        return AgentLayout(self.root / "agents" / name, name)

    def identity_cache(self, plc_url: str) -> Path:
        """DID documents cached per PLC directory (a devnet's PLC is a different world from the real one)."""
        return self.root / "identity" / f"did-documents-{hashlib.sha256(plc_url.encode()).hexdigest()[:10]}.json"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def demo_settings(self) -> Path:
        """The VOID_* settings `make demo` used, for `make ui` to open on the demo's agent and data."""
        return self.root / "demo.env"

    def earlier_layout_exports(self) -> list[Path]:
        """Folders of the layout before agents/ (``<data>/ingest/did_*``): reported, never read."""
        legacy = self.root / "ingest"
        return sorted(p for p in legacy.glob("did_*") if p.is_dir()) if legacy.exists() else []
