"""Who the pipeline is about: the agent's identity, resolved once per step, and where its data lives."""

from void_pipeline.lib.export import RepoPaths
from void_pipeline.lib.identity import Identity, IdentityResolver
from void_pipeline.lib.resilience import ResilientHttp
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.storage import PipelineStorage


def resolve_agent(
    endpoint: AtprotoEndpoint, storage: PipelineStorage, http: ResilientHttp
) -> tuple[IdentityResolver, Identity]:
    """The agent's identity (DID, handle, PDS), with DID documents cached on disk per PLC directory."""
    resolver = endpoint.identities(http, storage.identity_cache(endpoint.plc_url))
    agent = endpoint.agent(resolver)
    resolver.save()
    return resolver, agent


def agent_identity(endpoint: AtprotoEndpoint, storage: PipelineStorage) -> Identity:
    with endpoint.http() as http:
        return resolve_agent(endpoint, storage, http)[1]


def agent_paths(endpoint: AtprotoEndpoint, storage: PipelineStorage) -> RepoPaths:
    return storage.repo(agent_identity(endpoint, storage).did)
