"""Session fixtures: one real devnet (PLC, two PDSes, AppView on loopback), one small seeded corpus, its agent, the
corpus curated, the tiny model and the session's one trained adapter."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pytest

from void_pipeline.defs.train.assets import lora_adapter, merged_model
from void_pipeline.lib import environments
from void_pipeline.lib.curate.dataset import format_row
from void_pipeline.lib.processes import pid_alive
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.testworld.cli import build_tiny_model, instruct_pretraining
from void_pipeline.testworld.corpus import COLLECTIONS, POST, Corpus, generate, record_text
from void_pipeline.testworld.devnet import Devnet, DevnetInfo
from void_pipeline.testworld.seeding import SeedResult, seed_corpus
from void_pipeline.testworld.tiny_tokenizer import train_tokenizer
from void_pipeline_tests.support.ingest import materialize_ingest
from void_pipeline_tests.support.runs import failure_text
from void_pipeline_tests.support.tiers import FastTierPopen
from void_pipeline_tests.support.trainer import Trained, materialize, run_trainer
from void_pipeline_tests.support.world import TEST_SPEC, Agent, model_choice

# Fixtures that start a devnet, a trainer or a server (the others build on them): only integration tests ask for them
INTEGRATION_FIXTURES = {"devnet", "trainer_bin", "server_python", "instruct_model"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("integration")
    ]
    if unmarked:
        raise pytest.UsageError(f"tests that start servers without the integration marker: {', '.join(unmarked)}")


@pytest.fixture(autouse=True)
def fast_tier_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test without the integration marker that starts a server, trainer or devnet fails, naming it."""
    if not request.node.get_closest_marker("integration"):
        monkeypatch.setattr(subprocess, "Popen", FastTierPopen)


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
    from void_pipeline.defs.curate import defs as curate_defs
    from void_pipeline.defs.curate.assets import chat_dataset, context_window, filtered_records
    from void_pipeline.defs.ingest.assets import raw_records, thread_context

    checks = list(curate_defs.asset_checks or [])
    assets = [raw_records, thread_context, filtered_records, context_window, chat_dataset]
    root = tmp_path_factory.mktemp("curate")
    storage = PipelineStorage(root=str(root))
    materialize_ingest(devnet_endpoint, storage)
    resources = {
        "endpoint": devnet_endpoint,
        "storage": storage,
        # the model choice the tests train with: the tiny overlay (cpu first, on a CPU), counted with the tiny model's tokenizer
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


# The trainer's: its environment, the tiny model built from the corpus, a small chat dataset, and the session's one
# trained (and merged) adapter that every test needing *an* adapter shares (train, evaluate, serve).


@pytest.fixture(scope="session")
def trainer_bin() -> Path:
    return environments.ensure("trainer") / "bin"


@pytest.fixture(scope="session")
def tiny_model(trainer_bin: Path, corpus_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    tokenizer = corpus_tokenizer
    result = run_trainer(
        trainer_bin,
        str(trainer_bin / "python"),
        "-m",
        "void_pipeline.testworld.tiny_model",
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(root / "model"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "model"


@pytest.fixture(scope="session")
def instruct_model(corpus: Corpus, corpus_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model pretrained as the demo's is (other authors' posts, and replies answered with the reply tool):
    it writes well-formed calls, where the random one writes none. Built once per content and cached (~70 s cold on
    two cores)."""
    root = tmp_path_factory.mktemp("instruct")
    pretraining = root / "pretraining.jsonl"
    pretraining.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in instruct_pretraining(corpus)))
    build_tiny_model(corpus_tokenizer, root / "model", pretraining)
    return root / "model"


@pytest.fixture(scope="session")
def tiny_dataset(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenAI-format rows: a prompt and the agent's real posts as tool calls."""
    posts = [record_text(r.value) for r in corpus.records if r.collection == POST and r.author == corpus.agent.handle]
    rows = [
        format_row(
            {
                "prompt": f"You received a mention. MOST RECENT POST: {posts[i + 1][:120]}",
                "calls": [posts[i]],
                "reasoning": None,
            },
            "openai",
        )
        for i in range(0, 120, 2)
    ]
    path = tmp_path_factory.mktemp("dataset") / "train.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return path


@pytest.fixture(scope="session")
def trained(curated: dict[str, Any], tiny_model: Path, trainer_bin: Path) -> Iterator[Trained]:
    """One real training of the tiny model (12 steps, logged every 2: steps are numbered by the trainer, not
    counted) and its merge, shared by every test that needs an adapter."""
    overrides = {"max_steps": 12, "save_steps": 6, "logging_steps": 2}
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(
            curated, tiny_model, trainer_bin, overrides, instance=instance, assets=(lora_adapter, merged_model)
        )
        assert result.success, failure_text(result)
        yield Trained(instance, result)
