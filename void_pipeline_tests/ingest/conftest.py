"""Ingest fixtures: the agent of the shared seeded devnet, and a helper to run the exporter against it."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pytest

from void_pipeline.lib.corpus import COLLECTIONS, Corpus
from void_pipeline.lib.devnet import DevnetInfo
from void_pipeline.lib.seeding import SeedResult
from void_pipeline.resources.atproto import AtprotoEndpoint


@dataclass(frozen=True)
class Agent:
    handle: str
    did: str
    pds_url: str


@pytest.fixture(scope="session")
def agent(seeded: SeedResult, corpus: Corpus) -> Agent:
    account = seeded.accounts[corpus.agent.handle]
    return Agent(account.handle, account.did, account.pds_url)


def expected_records(seeded: SeedResult, did: str, collection: str) -> dict[str, str]:
    """uri → cid of what the repo holds now, from the ground-truth manifest."""
    live = seeded.manifest.filter((pl.col("did") == did) & (pl.col("collection") == collection) & ~pl.col("deleted"))
    return dict(zip(live["uri"], live["cid"], strict=True))


def all_expected(seeded: SeedResult, did: str) -> dict[str, dict[str, str]]:
    return {c: expected_records(seeded, did, c) for c in COLLECTIONS}


@pytest.fixture(scope="session")
def devnet_endpoint(devnet: DevnetInfo, agent: Agent) -> AtprotoEndpoint:
    """The exporter's endpoint resource, pointed at the shared devnet."""
    assert devnet.appview_url
    return AtprotoEndpoint(actor=agent.handle, plc_url=devnet.plc_url, appview_url=devnet.appview_url)
