"""Session fixtures: one real devnet (PLC, two PDSes, AppView on loopback), one small seeded corpus, its agent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from void_pipeline.lib.layout import REPO_ROOT, DataLayout, IngestPaths
from void_pipeline.lib.processes import pid_alive
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.model import ModelChoice
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.testworld.corpus import COLLECTIONS, Corpus, CorpusSpec, generate, record_text
from void_pipeline.testworld.devnet import Devnet, DevnetInfo
from void_pipeline.testworld.seeding import SeedResult, seed_corpus
from void_pipeline.testworld.tiny_tokenizer import train_tokenizer

# The trainer's fixtures (tiny model, the session's one trained adapter) for every folder that needs a model.
pytest_plugins = ["void_pipeline_tests.trainer_fixtures"]

TEST_SPEC = CorpusSpec(seed=11, agent_posts=400, other_accounts=20, deleted_parent_share=0.05)


def pipeline_cli(
    *args: str, env: dict[str, str] | None = None, module: str = "void_pipeline"
) -> subprocess.CompletedProcess[str]:
    """``python -m void_pipeline ARGS`` (or another ``module``) as an operator runs it, with nothing from this
    process's environment but the checkout on PYTHONPATH and ``env``, the operator's variables."""
    command = [sys.executable, "-m", module, *args]
    variables = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", **(env or {})}
    return subprocess.run(
        command, cwd=REPO_ROOT, env=variables, capture_output=True, text=True, timeout=120, check=False
    )


def model_choice(**changes: Any) -> ModelChoice:
    """The tests' model choice: the default config with the CPU overlay at sequence_len 4096, ``changes`` on top."""
    fields: dict[str, Any] = {"overlays": ["cpu-tiny"], "sequence_len": 4096, **changes}
    return ModelChoice(**fields)


def agent_ingest(data_root: Path, agent: str = "void") -> IngestPaths:
    """The ingest folder of ``agent`` under a data root (what the exporter and the CLI with --agent write)."""
    return DataLayout(data_root).agent(agent).ingest


@pytest.fixture(scope="session")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetInfo]:
    world = Devnet(tmp_path_factory.mktemp("devnet") / "state")
    info = world.start()
    try:
        yield info
    finally:
        world.stop()
    leftovers = [p.pid for p in info.processes() if pid_alive(p.pid)]
    assert not leftovers, f"devnet processes left behind: {leftovers}"


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return generate(TEST_SPEC)


@pytest.fixture(scope="session")
def corpus_tokenizer(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's tokenizer, trained on the corpus: curate counts with it, the tiny model is built on it."""
    texts = [record_text(r.value) for r in corpus.records]
    return train_tokenizer(texts, tmp_path_factory.mktemp("tokenizer") / "tokenizer", vocab_size=2048)


@pytest.fixture(scope="session")
def seeded(devnet: DevnetInfo, corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> SeedResult:
    out: Path = tmp_path_factory.mktemp("seed")
    return seed_corpus(devnet, corpus, out_dir=out, progress=lambda message: None)


@dataclass(frozen=True)
class Agent:
    handle: str
    did: str
    pds_url: str


@pytest.fixture(scope="session")
def agent(seeded: SeedResult, corpus: Corpus) -> Agent:
    account = seeded.accounts[corpus.agent.handle]
    return Agent(account.handle, account.did, account.pds_url)


@pytest.fixture(scope="session")
def devnet_endpoint(devnet: DevnetInfo, agent: Agent) -> AtprotoEndpoint:
    """The exporter's endpoint resource, pointed at the shared devnet."""
    assert devnet.appview_url
    return AtprotoEndpoint(actor=agent.handle, plc_url=devnet.plc_url, appview_url=devnet.appview_url)


@pytest.fixture(scope="session")
def curated(
    devnet_endpoint: AtprotoEndpoint, corpus_tokenizer: Path, agent: Agent, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The shared devnet exported and curated through the real assets (tests of later stages build on it)."""
    import dagster as dg

    from void_pipeline.defs.curate import defs as curate_defs
    from void_pipeline.defs.curate.assets import chat_dataset, context_window, filtered_records
    from void_pipeline.defs.ingest.assets import raw_records, thread_context
    from void_pipeline_tests.ingest.test_export import materialize_ingest

    checks = list(curate_defs.asset_checks or [])
    assets = [raw_records, thread_context, filtered_records, context_window, chat_dataset]
    root = tmp_path_factory.mktemp("curate")
    storage = PipelineStorage(root=str(root))
    materialize_ingest(devnet_endpoint, storage)
    resources = {
        "endpoint": devnet_endpoint,
        "storage": storage,
        # the model choice the tests train with: the CPU overlay, counted with the tiny model's tokenizer
        "model": model_choice(local_path=str(corpus_tokenizer)),
    }
    metadata: dict[str, Any] = {"storage": storage, "resources": resources, "checks": {}, "filtered_checks": {}}
    for collection in COLLECTIONS:
        result = dg.materialize(
            [*assets, *checks], selection=[filtered_records.key], partition_key=collection, resources=resources
        )
        assert result.success
        metadata[collection] = result.asset_materializations_for_node("filtered_records")[0].metadata
        metadata["filtered_checks"][collection] = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    config = {"ops": {"chat_dataset": {"config": {"test_threads": 10}}}}
    result = dg.materialize(
        [*assets, *checks], selection=[context_window.key, chat_dataset.key], resources=resources, run_config=config
    )
    assert result.success
    metadata["chat_dataset"] = result.asset_materializations_for_node("chat_dataset")[0].metadata
    metadata["chat_dataset_version"] = (result.asset_materializations_for_node("chat_dataset")[0].tags or {}).get(
        "dagster/data_version"
    )
    metadata["context_window"] = result.asset_materializations_for_node("context_window")[0].metadata
    metadata["checks"] = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    metadata["dataset"] = storage.agent_layout.curate.chat_dataset("openai")
    metadata["filtered"] = storage.agent_layout.curate.filtered
    metadata["assets"] = assets
    return metadata
