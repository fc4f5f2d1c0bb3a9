"""A repository CAR (``com.atproto.sync.getRepo``) walked into collection/rkey → record.

The CAR holds the signed commit (its root), the Merkle Search Tree nodes and the record blocks. MST node:
``{"l": left subtree CID | None, "e": [{"p": shared prefix length, "k": key suffix, "v": record CID,
"t": right subtree CID | None}, ...]}``; keys are ``collection/rkey``, each entry's key is the previous key's
first ``p`` bytes plus ``k``. A diff CAR (``getRepo?since=rev``) carries only what changed since ``rev``: absent
nodes and records there are unchanged, not missing. With the MST nodes of the tree at ``rev`` kept from the run
before (``known_nodes``), the diff's new tree can be walked whole: its keys say which records are gone.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import libipld


class CarError(ValueError):
    """The CAR cannot be used at all (truncated, corrupt, no commit)."""


@dataclass(frozen=True)
class CarRecord:
    collection: str
    rkey: str
    cid: str
    value: Any  # the decoded record; normally a dict


@dataclass(frozen=True)
class CarProblem:
    key: str
    cid: str
    reason: str


@dataclass
class RepoWalk:
    did: str
    rev: str
    partial: bool
    records: list[CarRecord] = field(default_factory=list)
    problems: list[CarProblem] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)  # every collection/rkey in the walked tree
    nodes: dict[bytes, Any] = field(default_factory=dict)  # the tree's MST nodes, CID → decoded node
    unknown_nodes: int = 0  # nodes in neither the CAR nor known_nodes: ``keys`` is then incomplete

    @property
    def whole_tree(self) -> bool:
        return self.unknown_nodes == 0

    def in_collection(self, collection: str) -> Iterator[CarRecord]:
        return (r for r in self.records if r.collection == collection)


def cid_str(cid: bytes) -> str:
    return str(libipld.encode_multibase("b", cid))


def section_end(data: bytes) -> int:
    """Where the CAR's length-prefixed sections end; ``len(data)`` unless the last one is cut short.

    libipld accepts a CAR cut at a block boundary or inside the next length prefix, so the framing is checked here.
    """
    offset, size = 0, len(data)
    while offset < size:
        length = shift = 0
        while True:
            if offset >= size:
                return offset
            byte = data[offset]
            offset += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        if offset + length > size:
            return offset
        offset += length
    return offset


def read_repo_car(
    data: bytes, expected_did: str | None = None, partial: bool = False, known_nodes: dict[bytes, Any] | None = None
) -> RepoWalk:
    """Decode and walk a repo CAR. ``partial`` for a diff CAR, ``known_nodes`` the MST nodes of its base revision.
    Raises CarError when the CAR is unusable.

    A full CAR must hold its whole MST: a missing node hides every record under it, so that is an error (the export
    falls back to listRecords), while a missing record block is a problem reported for that one record.
    """
    prefix = f"corrupt or truncated CAR ({len(data):,} bytes)"
    if (end := section_end(data)) != len(data):
        raise CarError(f"{prefix}: a section is cut short at byte {end:,}")
    try:
        header, blocks = libipld.decode_car(data)
    except Exception as err:  # libipld raises plain ValueError/OSError variants for bad bytes
        raise CarError(f"{prefix}: {err}") from err
    roots = header.get("roots") or []
    if not roots or roots[0] not in blocks:
        raise CarError(f"{prefix}: no commit block at its root")
    commit = blocks[roots[0]]
    if not isinstance(commit, dict) or not {"did", "data", "rev"} <= set(commit):
        raise CarError("CAR root is not a repo commit (needs did, data, rev)")
    if expected_did is not None and commit["did"] != expected_did:
        raise CarError(f"CAR is the repo of {commit['did']}, expected {expected_did}")
    walk = RepoWalk(did=str(commit["did"]), rev=str(commit["rev"]), partial=partial)

    stack: list[bytes] = [commit["data"]]  # an explicit stack of MST node CIDs (order is not significant)
    seen: set[bytes] = set()
    while stack:
        node_cid = stack.pop()
        if node_cid in seen:
            walk.problems.append(CarProblem("", cid_str(node_cid), "mst_cycle"))
            continue
        seen.add(node_cid)
        node = blocks.get(node_cid)
        if node is None and known_nodes is not None:
            node = known_nodes.get(node_cid)
        if node is None:
            walk.unknown_nodes += 1
            if not partial:
                walk.problems.append(CarProblem("", cid_str(node_cid), "missing_mst_node"))
            continue
        if not isinstance(node, dict) or not isinstance(node.get("e"), list):
            walk.problems.append(CarProblem("", cid_str(node_cid), "malformed_mst_node"))
            continue
        walk.nodes[node_cid] = node
        if node.get("l"):
            stack.append(node["l"])
        key = b""
        for entry in node["e"]:
            try:
                key = key[: int(entry["p"])] + bytes(entry["k"])
                value_cid = entry["v"]
            except (KeyError, TypeError, ValueError):
                walk.problems.append(CarProblem(key.decode(errors="replace"), "", "malformed_mst_entry"))
                continue
            walk.keys.add(key.decode(errors="replace"))
            _visit_entry(walk, blocks, key, value_cid, partial)
            if entry.get("t"):
                stack.append(entry["t"])
    missing_nodes = sum(p.reason == "missing_mst_node" for p in walk.problems)
    if missing_nodes:
        raise CarError(f"{prefix}: {missing_nodes} MST node(s) missing, the records under them cannot be listed")
    return walk


def encode_nodes(nodes: dict[bytes, Any]) -> bytes:
    """MST nodes as one DAG-CBOR list of [cid, node] pairs (kept beside the CARs for the next diff)."""
    return bytes(libipld.encode_dag_cbor([[cid, node] for cid, node in sorted(nodes.items())]))


def decode_nodes(data: bytes) -> dict[bytes, Any]:
    try:
        pairs = libipld.decode_dag_cbor(data)
        return {bytes(cid): node for cid, node in pairs}
    except Exception as err:  # libipld raises plain ValueError variants for bad bytes
        raise CarError(f"the kept MST nodes cannot be read: {err}") from err


def _visit_entry(walk: RepoWalk, blocks: dict[bytes, Any], key: bytes, value_cid: bytes, partial: bool) -> None:
    text_key = key.decode(errors="replace")
    collection, _, rkey = text_key.partition("/")
    if not collection or not rkey:
        walk.problems.append(CarProblem(text_key, cid_str(value_cid), "malformed_key"))
        return
    record = blocks.get(value_cid)
    if record is None:
        if not partial:
            walk.problems.append(CarProblem(text_key, cid_str(value_cid), "missing_record_block"))
        return
    walk.records.append(CarRecord(collection, rkey, cid_str(value_cid), record))


def to_json_value(value: Any) -> Any:
    """A decoded DAG-CBOR value as JSON data: CID links → ``{"$link": cid}``, other bytes → ``{"$bytes": b64}``."""
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json_value(v) for v in value]
    if isinstance(value, bytes):
        if value[:2] == b"\x01\x71" or value[:2] == b"\x01\x55":  # CIDv1 dag-cbor / raw (blobs)
            return {"$link": cid_str(value)}
        return {"$bytes": base64.b64encode(value).decode()}
    return value
