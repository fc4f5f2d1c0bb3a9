"""Session fixtures: one real devnet (PLC, two PDSes, AppView on loopback), one small seeded corpus, its agent."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from void_pipeline.lib.corpus import Corpus, CorpusSpec, generate
from void_pipeline.lib.devnet import Devnet, DevnetInfo, pid_alive
from void_pipeline.lib.seeding import SeedResult, seed_corpus
from void_pipeline.resources.atproto import AtprotoEndpoint

TEST_SPEC = CorpusSpec(seed=11, agent_posts=400, other_accounts=20, deleted_parent_share=0.05)


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
