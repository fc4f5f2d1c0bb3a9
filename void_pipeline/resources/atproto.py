"""The AT Protocol endpoints the exporter talks to, and its rate limits."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from void_pipeline.lib.ingest.identity import Identity, IdentityResolver
from void_pipeline.lib.ingest.resilience import (
    DEFAULT_LIMITS,
    HostLimit,
    ResilientHttp,
    RetryPolicy,
    connect_error,
    is_loopback,
)
from void_pipeline.lib.ingest.xrpc import XrpcClient, XrpcError
from void_pipeline.lib.settings import DEFAULT_APPVIEW_URL, DEFAULT_PLC_URL


class AtprotoEndpoint(dg.ConfigurableResource):
    """The agent and the services around it. Public records need no credentials.

    Defaults point at the real network; ``make demo`` and the tests point them at the local devnet.
    """

    actor: str = Field(default="void.comind.network", description="the agent's handle or DID")
    plc_url: str = Field(default=DEFAULT_PLC_URL, description="PLC directory for did:plc lookups")
    appview_url: str = Field(default=DEFAULT_APPVIEW_URL, description="AppView for getPosts")
    pds_url: str | None = Field(default=None, description="override the PDS found in the DID document")
    app_password: str | None = Field(
        default=None, description="optional app password; set it with EnvVar('VOID_APP_PASSWORD'), never inline"
    )
    pds_requests_per_second: float = Field(
        default=DEFAULT_LIMITS["pds"].requests_per_second, description="PDS limit: 3000 requests / 5 min per IP"
    )
    pds_burst: float = DEFAULT_LIMITS["pds"].burst
    appview_requests_per_second: float = DEFAULT_LIMITS["appview"].requests_per_second
    appview_burst: float = DEFAULT_LIMITS["appview"].burst
    plc_requests_per_second: float = DEFAULT_LIMITS["plc"].requests_per_second
    concurrency: int = Field(default=8, description="parallel getPosts/getRecord calls")
    timeout_s: float = 30.0
    retry_attempts: int = 8

    def http(self) -> ResilientHttp:
        http = ResilientHttp(
            default_limit=HostLimit(self.pds_requests_per_second, self.pds_burst),
            policy=RetryPolicy(attempts=self.retry_attempts),
            timeout_s=self.timeout_s,
            max_connections=max(8, self.concurrency * 2),
        )
        http.set_limit(self.appview_url, HostLimit(self.appview_requests_per_second, self.appview_burst))
        http.set_limit(self.plc_url, HostLimit(self.plc_requests_per_second, self.plc_requests_per_second * 2))
        return http

    def failure(self, err: Exception) -> dg.Failure:
        """A resolution or export that failed, as a Failure that first names each configured service that accepts
        no connection (a devnet that is down, a typo'd port): otherwise the cause reads as a missing handle."""
        configured = [("PLC directory", "plc_url", "VOID_PLC_URL", self.plc_url)]
        configured.append(("AppView", "appview_url", "VOID_APPVIEW_URL", self.appview_url))
        if self.pds_url:
            configured.append(("PDS", "pds_url", "VOID_PDS_URL", self.pds_url))
        down = [
            f"the configured {what} {url} ({field}, {setting}) is unreachable: {why}"
            for what, field, setting, url in configured
            if (why := connect_error(url)) is not None
        ]
        if not down:
            return dg.Failure(str(err))
        local = all(is_loopback(url) for *_, url in configured)
        remedy = "Start it (a devnet: make devnet-up)" if local else "Check the network"
        return dg.Failure("; ".join(down) + f". {remedy} or correct the setting. Cause: {err}")

    def identities(self, http: ResilientHttp, cache_path: Path | None) -> IdentityResolver:
        return IdentityResolver(http, self.plc_url, [self.appview_url], cache_path=cache_path)

    def agent(self, resolver: IdentityResolver) -> Identity:
        identity = resolver.resolve(self.actor)
        if self.pds_url:
            return Identity(identity.did, identity.handle, self.pds_url.rstrip("/"))
        return identity

    def pds(self, identity: Identity, http: ResilientHttp) -> XrpcClient:
        """The agent's PDS. With an app password, calls carry the session's token (public reads need none)."""
        if not self.app_password:
            return XrpcClient(identity.pds_url, client=http)
        try:
            session = XrpcClient(identity.pds_url, client=http).procedure(
                "com.atproto.server.createSession", {"identifier": identity.did, "password": self.app_password}
            )
        except XrpcError as err:  # the error names the account, never the password
            raise dg.Failure(
                f"login to {identity.pds_url} as {identity.did} failed: {err.error} {err.message}"
            ) from err
        return XrpcClient(identity.pds_url, client=http, token=session["accessJwt"])
