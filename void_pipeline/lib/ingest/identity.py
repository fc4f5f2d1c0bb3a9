"""Who is an account and where does it live: handle → DID → DID document → PDS endpoint and handle.

handle → DID: ``com.atproto.identity.resolveHandle`` on the configured services, then the handle's own
``https://<handle>/.well-known/atproto-did``, then DNS TXT ``_atproto.<handle>`` (neither for a local world: a
loopback PLC, or a handle under a reserved TLD such as ``.test``). DID → document: did:plc from
the PLC directory, did:web from ``https://<host>/.well-known/did.json``. Every answer is cached in memory and,
when a path is given, DID documents on disk too (JSON, written atomically, kept ``doc_ttl_s``), so a run never
resolves the same DID twice. Handles are never persisted: they move between DIDs.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.ingest.resilience import ResilientHttp, TransportFailure, UnknownHost, is_loopback
from void_pipeline.lib.ingest.xrpc import XrpcClient, XrpcError


class IdentityError(RuntimeError):
    """An identity could not be resolved; the message says which and why."""


# Syntax from atproto.com/specs/handle and /specs/did: checked before any network call.
HANDLE = re.compile(r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$")


def actor_syntax_error(actor: str) -> str | None:
    """Why ``actor`` is neither a valid handle nor a valid DID, or None."""
    if actor.startswith("did:"):
        return None if len(actor) <= 2048 and DID.match(actor) else f"{actor!r} is not a valid DID"
    handle = actor.removeprefix("@")
    if len(handle) <= 253 and HANDLE.match(handle):
        return None
    return f"{actor!r} is not a valid handle (like void.comind.network) or DID (like did:plc:...)"


# Names that never exist on the public internet (RFC 2606, RFC 6761): only a local world has such handles.
RESERVED_TLDS = frozenset({"test", "example", "invalid", "localhost"})


@dataclass(frozen=True)
class Attempt:
    """One place asked for a handle: what it said, and whether that was a definite "no" (not a fault)."""

    text: str
    definite: bool


@dataclass(frozen=True)
class Identity:
    did: str
    handle: str | None
    pds_url: str


def parse_did_document(did: str, doc: dict[str, Any]) -> Identity:
    if doc.get("id") != did:
        raise IdentityError(f"DID document for {did} names another subject: {doc.get('id')!r}")
    pds = next(
        (
            s.get("serviceEndpoint")
            for s in doc.get("service", [])
            if str(s.get("id", "")).endswith("#atproto_pds") and isinstance(s.get("serviceEndpoint"), str)
        ),
        None,
    )
    if not pds:
        raise IdentityError(f"DID document for {did} has no #atproto_pds service")
    handle = next(
        (aka.removeprefix("at://") for aka in doc.get("alsoKnownAs", []) if str(aka).startswith("at://")), None
    )
    return Identity(did=did, handle=handle, pds_url=str(pds).rstrip("/"))


class IdentityResolver:
    def __init__(
        self,
        http: ResilientHttp,
        plc_url: str,
        handle_services: list[str] | None = None,
        cache_path: Path | None = None,
        use_dns: bool = True,
        doc_ttl_s: float = 86400.0,
    ) -> None:
        self.http = http
        self.plc_url = plc_url.rstrip("/")
        self.handle_services = [s.rstrip("/") for s in (handle_services or [])]
        self.cache_path = cache_path
        self.use_dns = use_dns
        self._lock = threading.Lock()
        self._docs: dict[str, dict[str, Any]] = {}
        self._fetched_at: dict[str, float] = {}
        self._handles: dict[str, str] = {}
        self.discarded = ""  # a cache that could not be read, for a warning: it is only a cache
        if cache_path is not None and cache_path.exists():
            try:
                saved = json.loads(cache_path.read_bytes())
                if not isinstance(saved, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError) as err:
                saved = {}
                self.discarded = f"DID document cache {cache_path} cannot be read ({err}); it is rebuilt"
            now = time.time()
            for did, entry in saved.get("docs", {}).items():
                if now - float(entry.get("fetched_at", 0)) < doc_ttl_s:
                    self._docs[did], self._fetched_at[did] = entry["doc"], float(entry["fetched_at"])

    def save(self) -> None:
        if self.cache_path is not None:
            with self._lock:
                docs = {did: {"doc": doc, "fetched_at": self._fetched_at[did]} for did, doc in self._docs.items()}
            write_text_atomic(self.cache_path, json.dumps({"docs": docs}, sort_keys=True))

    # -- handle → DID --------------------------------------------------------------------------------------

    def resolve_handle(self, handle: str) -> str:
        handle = handle.lower().removeprefix("@")
        with self._lock:
            if handle in self._handles:
                return self._handles[handle]
        tried: list[Attempt] = []
        did = None
        for service in self.handle_services:
            try:
                did = XrpcClient(service, client=self.http).query("com.atproto.identity.resolveHandle", handle=handle)[
                    "did"
                ]
                break
            except TransportFailure as err:
                tried.append(Attempt(f"{service} unreachable: {err}", definite=False))
            except (XrpcError, KeyError) as err:
                tried.append(Attempt(f"{service}: {err}", definite=True))
        if did is None:
            if skipped := self._no_public_lookup(handle):
                tried.append(Attempt(skipped, definite=False))
            else:
                did = self._well_known(handle, tried) or (self._dns(handle, tried) if self.use_dns else None)
        if did is None:
            detail = "; ".join(a.text for a in tried) or "no handle service is configured"
            if any(a.definite for a in tried):  # someone who would know said no: not a fault to retry
                raise IdentityError(f"handle {handle!r} not found (tried {detail})")
            raise IdentityError(f"cannot resolve handle {handle!r}: nothing that could answer did ({detail})")
        with self._lock:
            self._handles[handle] = did
        return did

    def _no_public_lookup(self, handle: str) -> str | None:
        """Why the handle's own host (well-known, DNS) is not asked, or None. A local world's handles live only in
        its services: asking public hosts for them costs seconds of retries and can only fail (or find another)."""
        tld = handle.rsplit(".", 1)[-1]
        if tld in RESERVED_TLDS:
            return f"no public lookup: .{tld} names exist only in a local world such as the devnet"
        if is_loopback(self.plc_url):
            return f"no public lookup: the PLC {self.plc_url} is local, so the handle can only be in its services"
        return None

    def _well_known(self, handle: str, tried: list[Attempt]) -> str | None:
        try:
            response = self.http.get(f"https://{handle}/.well-known/atproto-did")
        except TransportFailure as err:
            tried.append(Attempt(f"well-known: {err}", definite=isinstance(err, UnknownHost)))
            return None
        text = response.text.strip()
        if response.is_success and text.startswith("did:"):
            return text
        tried.append(Attempt(f"well-known: HTTP {response.status_code}", definite=True))
        return None

    def _dns(self, handle: str, tried: list[Attempt]) -> str | None:
        import dns.exception
        import dns.resolver

        try:
            answers = dns.resolver.resolve(f"_atproto.{handle}", "TXT", lifetime=5)
        except dns.exception.DNSException as err:
            definite = isinstance(err, dns.resolver.NXDOMAIN | dns.resolver.NoAnswer)
            tried.append(Attempt(f"dns: {type(err).__name__}", definite=definite))
            return None
        for answer in answers:
            text = b"".join(answer.strings).decode()
            if text.startswith("did="):
                return text.removeprefix("did=")
        tried.append(Attempt("dns: no did= record", definite=True))
        return None

    # -- DID → document ------------------------------------------------------------------------------------

    def did_document(self, did: str) -> dict[str, Any]:
        with self._lock:
            if did in self._docs:
                return self._docs[did]
        if did.startswith("did:plc:"):
            url = f"{self.plc_url}/{did}"
        elif did.startswith("did:web:"):
            host = did.removeprefix("did:web:").replace("%3A", ":")
            url = f"https://{host}/.well-known/did.json"
        else:
            raise IdentityError(f"unsupported DID method: {did}")
        try:
            response = self.http.get(url)
        except TransportFailure as err:
            raise IdentityError(f"cannot fetch the DID document of {did}: {err}") from err
        if not response.is_success:
            raise IdentityError(f"cannot fetch the DID document of {did}: HTTP {response.status_code}")
        try:
            doc: dict[str, Any] = response.json()
        except ValueError as err:
            raise IdentityError(f"the DID document of {did} is not JSON") from err
        with self._lock:
            self._docs[did] = doc
            self._fetched_at[did] = time.time()
        return doc

    def identity(self, did: str) -> Identity:
        return parse_did_document(did, self.did_document(did))

    def resolve(self, actor: str) -> Identity:
        """A handle or a DID → its identity (DID, handle, PDS)."""
        if error := actor_syntax_error(actor):
            raise IdentityError(error)
        did = actor if actor.startswith("did:") else self.resolve_handle(actor)
        return self.identity(did)
