"""The tests' world: the corpus spec the session devnet is seeded with, its agent, and the model choice they train
with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from void_pipeline.lib.layout import DataLayout, IngestPaths
from void_pipeline.resources.model import ModelChoice
from void_pipeline.testworld.corpus import CorpusSpec

TEST_SPEC = CorpusSpec(seed=11, agent_posts=400, other_accounts=20, deleted_parent_share=0.05)


@dataclass(frozen=True)
class Agent:
    handle: str
    did: str
    pds_url: str


def agent_ingest(data_root: Path, agent: str = "void") -> IngestPaths:
    """The ingest folder of ``agent`` under a data root (what the exporter and the CLI with --agent write)."""
    return DataLayout(data_root).agent(agent).ingest


def model_choice(**changes: Any) -> ModelChoice:
    """The tests' model choice: the default config with the tiny overlay (the cpu one first, on a CPU) at
    sequence_len 4096, ``changes`` on top."""
    fields: dict[str, Any] = {"overlays": ["tiny"], "sequence_len": 4096, **changes}
    return ModelChoice(**fields)
