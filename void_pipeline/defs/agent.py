"""Who the pipeline is about. Ingest resolves the agent over the network and records it (agent.json in the
agent's folder); every later asset and check reads that record, so they run from local files alone."""

import dagster as dg

from void_pipeline.lib.handoffs import HandoffError, TrainingOutcome
from void_pipeline.lib.ingest.agent import record_agent
from void_pipeline.lib.ingest.identity import Identity, IdentityError, IdentityResolver
from void_pipeline.lib.ingest.resilience import ResilientHttp, TransportFailure
from void_pipeline.lib.layout import AgentLayout, AgentRecord
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.storage import PipelineStorage


def resolve_agent(
    context: dg.AssetExecutionContext, endpoint: AtprotoEndpoint, storage: PipelineStorage, http: ResilientHttp
) -> tuple[IdentityResolver, Identity, bool]:
    """The agent's identity (DID, handle, PDS), with DID documents cached on disk per PLC directory, recorded in
    the agent's folder. The flag is True when the name now resolves to another DID than the record said."""
    resolver = endpoint.identities(http, storage.layout.identity_cache(endpoint.plc_url))
    if resolver.discarded:
        context.log.warning(resolver.discarded)
    try:
        agent = endpoint.agent(resolver)
    except (IdentityError, TransportFailure) as err:
        raise endpoint.failure(err) from err
    resolver.save()
    layout = storage.agent_layout
    changed = record_agent(layout, agent.did, agent.handle, agent.pds_url, endpoint.plc_url)
    if changed:
        context.log.warning(changed)
    for earlier in storage.layout.earlier_layout_exports():
        context.log.warning(
            f"{earlier} holds an export in the layout before agents/: it is not read (this agent's data lives in "
            f"{layout.root}); delete it when you no longer need it"
        )
    return resolver, agent, changed is not None


def latest_training(layout: AgentLayout) -> TrainingOutcome:
    """train/latest.json of the agent: what the stages after training read; a Failure before the first training or
    when the file is of another shape."""
    try:
        latest = layout.train.read_latest()
    except HandoffError as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    if latest is None:
        raise dg.Failure(f"no finished training in {layout.train.root}: materialize lora_adapter first",
                         allow_retries=False)  # fmt: skip
    return latest


def recorded_agent(storage: PipelineStorage) -> tuple[AgentRecord, AgentLayout]:
    """The agent as ingest recorded it, and its folders: no network. Fails clearly before the first ingest."""
    layout = storage.agent_layout
    record = layout.read_record()
    if record is None:
        raise dg.Failure(
            f"no agent recorded in {layout.record_path}: materialize raw_records first (it resolves agent "
            f"{storage.agent!r} and records who it is)",
            allow_retries=False,
        )
    return record, layout
