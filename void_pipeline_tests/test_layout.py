"""One layout: an agent's folder by its name, the agent resolved once by ingest, everything after it offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from void_pipeline.defs.curate import defs as curate_defs
from void_pipeline.defs.curate.assets import chat_dataset, context_window, filtered_records
from void_pipeline.defs.ingest.assets import raw_records
from void_pipeline.defs.ingest.checks import raw_records_unique_uris
from void_pipeline.lib.ingest.agent import record_agent
from void_pipeline.lib.ingest.records import POST
from void_pipeline.lib.layout import DataLayout, default_agent_name
from void_pipeline.lib.train.training import dataset_hash
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline_tests.support.world import Agent


def test_every_stage_lives_under_the_agents_name(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path).agent("void")
    assert layout.ingest.records(POST) == tmp_path / "agents/void/ingest/raw_records/app.bsky.feed.post.parquet"
    assert layout.curate.chat_dataset("openai") == tmp_path / "agents/void/curate/chat_dataset/openai"
    assert layout.train.latest == tmp_path / "agents/void/train/latest.json"
    assert default_agent_name("void.comind.network") == "void" and default_agent_name("@Void.bsky.social") == "void"
    with pytest.raises(ValueError, match="not a valid agent name"):
        DataLayout(tmp_path).agent("../escaped")


def test_a_name_that_resolves_to_another_did_says_so(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path).agent("void")
    assert record_agent(layout, "did:plc:first", "void.test", "http://pds", "http://plc") is None
    assert record_agent(layout, "did:plc:first", "void.test", "http://pds", "http://plc") is None
    said = record_agent(layout, "did:plc:second", "void.test", "http://pds", "http://plc")
    assert said and "now resolves to did:plc:second (was did:plc:first" in said
    assert layout.read_record() is not None and layout.read_record().did == "did:plc:second"  # type: ignore[union-attr]


@pytest.mark.integration
def test_a_new_did_refreshes_the_export_in_full_and_an_earlier_layout_is_named(
    devnet_endpoint: AtprotoEndpoint, agent: Agent, tmp_path: Path
) -> None:
    storage = PipelineStorage(root=str(tmp_path))
    resources = {"endpoint": devnet_endpoint, "storage": storage}
    first = dg.materialize([raw_records, raw_records_unique_uris], partition_key=POST, resources=resources)
    assert first.success
    layout = storage.agent_layout
    record = json.loads(layout.record_path.read_text())
    assert record["did"] == agent.did and record["handle"] == agent.handle
    # the same name pointed at another account earlier (a new devnet, a moved handle); an export of the old layout
    layout.record_path.write_text(json.dumps({**record, "did": "did:plc:someoneelse"}))
    (tmp_path / "ingest" / "did_plc_old").mkdir(parents=True)
    instance = dg.DagsterInstance.ephemeral()
    again = dg.materialize(
        [raw_records, raw_records_unique_uris], partition_key=POST, resources=resources, instance=instance
    )
    assert again.success
    meta = again.asset_materializations_for_node("raw_records")[0].metadata
    assert meta["incremental"].value is False  # refreshed in full, not diffed against another repo's revision
    warnings = [e.user_message for e in instance.all_logs(again.run_id) if e.level == 30]
    assert any(f"now resolves to {agent.did} (was did:plc:someoneelse" in w for w in warnings), warnings
    assert any("ingest/did_plc_old holds an export in the layout before agents/" in w for w in warnings)
    assert json.loads(layout.record_path.read_text())["did"] == agent.did


@pytest.mark.integration
def test_everything_after_ingest_runs_from_local_files_without_the_network(curated: dict[str, Any]) -> None:
    """No endpoint resource at all (no PLC, no AppView, no PDS to ask): curate and its checks still materialize."""
    resources = {k: v for k, v in curated["resources"].items() if k != "endpoint"}
    assets = [filtered_records, context_window, chat_dataset, *(curate_defs.asset_checks or [])]
    filtered = dg.materialize(assets, selection=[filtered_records.key], partition_key=POST, resources=resources)
    assert filtered.success and all(c.passed for c in filtered.get_asset_check_evaluations())
    config = {"ops": {"chat_dataset": {"config": {"test_threads": 10}}}}
    before = dataset_hash(curated["dataset"])
    rest = dg.materialize(
        assets, selection=[context_window.key, chat_dataset.key], resources=resources, run_config=config
    )
    assert rest.success
    # the same data makes the same dataset, byte for byte: Letta's rows hold times, but the examples' own
    assert dataset_hash(curated["dataset"]) == before
    checks = {c.check_name: c.passed for c in rest.get_asset_check_evaluations()}
    assert checks == {"chat_dataset_has_no_split_leak": True, "chat_dataset_tool_calls_are_valid": True}
