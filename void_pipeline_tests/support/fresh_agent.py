"""A fresh agent on the shared devnet: its own accounts, posts and deletions, which no test comparing exports with
the seeded corpus ever sees (those compare the seeded accounts only).

    world = FreshWorld.create(devnet, "forget")        # accounts forget-a-<id>.comind.test, forget-o-<id>.bsky.test
    root = world.post(world.other, "a question about entropy", created_at=...)
    reply = world.post(world.agent, "an answer", reply_to=root)
    world.delete(world.agent, reply)
    endpoint = world.endpoint()                        # an AtprotoEndpoint whose actor is the fresh agent
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from void_pipeline.lib.ingest.records import POST
from void_pipeline.lib.ingest.xrpc import XrpcClient
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.testworld.devnet import DevnetInfo


@dataclass(frozen=True)
class PostRef:
    uri: str
    cid: str
    root: PostRef | None = None  # the thread's root (None: this post is one)

    @property
    def rkey(self) -> str:
        return self.uri.rsplit("/", 1)[1]

    def strong(self) -> dict[str, str]:
        return {"uri": self.uri, "cid": self.cid}


@dataclass
class Account:
    handle: str
    did: str
    pds_url: str
    password: str
    display_name: str
    _token: str = field(default="", repr=False)

    def token(self) -> str:
        """A fresh access token (the devnet's expire; a session per write is cheap on loopback)."""
        with XrpcClient(self.pds_url) as client:
            session = client.procedure(
                "com.atproto.server.createSession", {"identifier": self.handle, "password": self.password}
            )
        self._token = str(session["accessJwt"])
        return self._token


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class FreshWorld:
    devnet: DevnetInfo
    agent: Account
    other: Account

    @classmethod
    def create(cls, devnet: DevnetInfo, name: str) -> FreshWorld:
        """Two new accounts: ``<name>-a-<id>`` on the agent's PDS and ``<name>-o-<id>`` on the other one, each with
        a profile display name (a PDS takes at most 18 characters before its domain: ``name`` is cut to 8)."""
        suffix, short = uuid.uuid4().hex[:6], name[:8]
        agent = make_account(devnet, f"{short}-a-{suffix}", devnet.pds[0].handle_domain, f"{name} agent")
        other_pds = devnet.pds[1] if len(devnet.pds) > 1 else devnet.pds[0]
        other = make_account(devnet, f"{short}-o-{suffix}", other_pds.handle_domain, f"{name} other")
        return cls(devnet, agent, other)

    def post(
        self,
        author: Account,
        text: str,
        reply_to: PostRef | None = None,
        created_at: datetime | None = None,
    ) -> PostRef:
        """A post by ``author`` (a reply when ``reply_to`` is given), created at ``created_at`` (default: now)."""
        record: dict[str, Any] = {"$type": POST, "text": text, "createdAt": iso(created_at or datetime.now(UTC))}
        if reply_to is not None:
            root = reply_to.root or reply_to
            record["reply"] = {"root": root.strong(), "parent": reply_to.strong()}
        with XrpcClient(author.pds_url) as client:
            made = client.procedure(
                "com.atproto.repo.createRecord",
                {"repo": author.did, "collection": POST, "record": record},
                token=author.token(),
            )
        return PostRef(str(made["uri"]), str(made["cid"]), (reply_to.root or reply_to) if reply_to else None)

    def delete(self, author: Account, ref: PostRef) -> None:
        """Delete ``ref`` from its author's repo, as its owner would."""
        with XrpcClient(author.pds_url) as client:
            client.procedure(
                "com.atproto.repo.deleteRecord",
                {"repo": author.did, "collection": POST, "rkey": ref.rkey},
                token=author.token(),
            )

    def latest_rev(self, account: Account) -> str:
        """The revision of the account's latest commit: unchanged means nothing was written to its repo."""
        with XrpcClient(account.pds_url) as client:
            return str(client.query("com.atproto.sync.getLatestCommit", did=account.did)["rev"])

    def endpoint(self) -> AtprotoEndpoint:
        """The exporter's endpoint resource for the fresh agent (the shared devnet's PLC and AppView)."""
        assert self.devnet.appview_url
        return AtprotoEndpoint(
            actor=self.agent.handle, plc_url=self.devnet.plc_url, appview_url=self.devnet.appview_url
        )


def make_account(devnet: DevnetInfo, name: str, domain: str, display_name: str) -> Account:
    handle = f"{name}{domain}"
    pds = devnet.pds_for_handle(handle)
    password = devnet.account_password(handle)
    with XrpcClient(pds.url) as client:
        session = client.procedure(
            "com.atproto.server.createAccount",
            {"handle": handle, "email": f"{name}@devnet.test", "password": password},
        )
        client.procedure(
            "com.atproto.repo.putRecord",
            {
                "repo": session["did"],
                "collection": "app.bsky.actor.profile",
                "rkey": "self",
                "record": {"$type": "app.bsky.actor.profile", "displayName": display_name},
            },
            token=session["accessJwt"],
        )
    return Account(handle, str(session["did"]), pds.url, password, display_name, str(session["accessJwt"]))
