"""Session fixtures: one real devnet (PLC + two PDSes on loopback) and one small seeded corpus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from void_pipeline.lib.corpus import Corpus, CorpusSpec, generate
from void_pipeline.lib.devnet import Devnet, DevnetInfo, pid_alive
from void_pipeline.lib.seeding import SeedResult, seed_corpus

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
