"""The CAR walker on real repo CARs from the devnet, whole and damaged."""

from __future__ import annotations

import itertools

import httpx
import libipld
import pytest

from void_pipeline.lib.ingest.repo_car import CarError, RepoWalk, cid_str, read_repo_car, to_json_value
from void_pipeline.testworld.corpus import COLLECTIONS
from void_pipeline.testworld.seeding import SeedResult, record_cid
from void_pipeline_tests.support.expected import all_expected
from void_pipeline_tests.support.world import Agent

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet


def varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[offset]
        value |= (byte & 0x7F) << shift
        offset += 1
        if byte < 0x80:
            return value, offset
        shift += 7


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def sections(car: bytes) -> tuple[bytes, list[bytes]]:
    """The CAR's header section and its block sections (each still with its length prefix)."""
    length, offset = varint(car, 0)
    header, offset = car[: offset + length], offset + length
    blocks = []
    while offset < len(car):
        length, start = varint(car, offset)
        blocks.append(car[offset : start + length])
        offset = start + length
    return header, blocks


def block_cid(section: bytes) -> bytes:
    _, start = varint(section, 0)
    return section[start : start + 36]  # CIDv1 + dag-cbor + sha2-256: 36 bytes


@pytest.fixture(scope="module")
def car(agent: Agent) -> bytes:
    return httpx.get(f"{agent.pds_url}/xrpc/com.atproto.sync.getRepo", params={"did": agent.did}).content


def test_walking_the_car_finds_every_record_with_its_cid(car: bytes, agent: Agent, seeded: SeedResult) -> None:
    walk = read_repo_car(car, expected_did=agent.did)
    assert not walk.problems
    expected = all_expected(seeded, agent.did)
    for collection in COLLECTIONS:
        found = {f"at://{agent.did}/{collection}/{r.rkey}": r.cid for r in walk.in_collection(collection)}
        assert found == expected[collection]
    record = walk.records[0]
    assert record_cid(record.value) == record.cid  # the block is the record the CID names


def test_a_truncated_car_is_an_error_not_a_partial_export(car: bytes) -> None:
    with pytest.raises(CarError, match="corrupt or truncated"):
        read_repo_car(car[: len(car) // 2 + 7])
    # libipld itself accepts a CAR cut at a block boundary or one byte into the next length prefix
    header, blocks = sections(car)
    whole = read_repo_car(car)
    boundaries = list(itertools.accumulate([len(header)] + [len(b) for b in blocks]))[:-1]
    for cut in [*boundaries[::7], *(b + 1 for b in boundaries[::7])]:
        try:
            walk = read_repo_car(car[:cut])
        except CarError as err:
            assert "corrupt or truncated" in str(err)
            continue
        assert_each_lost_record_reported(whole, walk, cut)
    # the same blocks in another order (a CAR's order is free): the commit and every MST node first, then the
    # records, so a cut after the last node loses only record blocks — the case above may never have reached
    record_cids = {r.cid for r in whole.records}
    nodes = [b for b in blocks if cid_str(block_cid(b)) not in record_cids]
    records = [b for b in blocks if cid_str(block_cid(b)) in record_cids]
    assert len(nodes) >= 2 and len(records) >= 3
    reordered = header + b"".join(nodes + records)
    assert read_repo_car(reordered).records == whole.records
    after_nodes = len(header) + sum(map(len, nodes))
    for kept in (0, 1, len(records) // 2, len(records) - 1):
        cut = after_nodes + sum(map(len, records[:kept]))
        assert_each_lost_record_reported(whole, read_repo_car(reordered[:cut]), cut)


def assert_each_lost_record_reported(whole: RepoWalk, walk: RepoWalk, cut: int) -> None:
    """Only record blocks lost after every MST node: each one reported, none silently."""
    missing = {(r.collection, r.rkey) for r in whole.records} - {(r.collection, r.rkey) for r in walk.records}
    assert missing and {p.key for p in walk.problems} == {f"{c}/{k}" for c, k in missing}, cut
    assert {p.reason for p in walk.problems} == {"missing_record_block"}, cut


def test_the_wrong_repo_is_refused(car: bytes) -> None:
    with pytest.raises(CarError, match="expected did:plc:someoneelse"):
        read_repo_car(car, expected_did="did:plc:someoneelse")


def test_a_missing_record_block_is_reported_and_the_rest_still_read(car: bytes, agent: Agent) -> None:
    walk = read_repo_car(car)
    victim = libipld.decode_cid(walk.records[5].cid)
    header, blocks = sections(car)
    kept = [s for s in blocks if cid_str(block_cid(s)) != walk.records[5].cid]
    assert len(kept) == len(blocks) - 1 and victim
    damaged = read_repo_car(header + b"".join(kept))
    assert [p.reason for p in damaged.problems] == ["missing_record_block"]
    assert damaged.problems[0].key == f"{walk.records[5].collection}/{walk.records[5].rkey}"
    assert len(damaged.records) == len(walk.records) - 1
    # the same CAR read as a diff: an absent block means "unchanged", not a problem
    assert not read_repo_car(header + b"".join(kept), partial=True).problems


def test_cid_links_and_bytes_become_json(car: bytes) -> None:
    link = b"\x01\x71\x12\x20" + bytes(32)
    converted = to_json_value({"a": link, "b": b"\x00\x01", "c": [1, "x"]})
    assert converted["a"] == {"$link": cid_str(link)}
    assert converted["b"] == {"$bytes": "AAE="}
    assert converted["c"] == [1, "x"]
    assert encode_varint(300) == b"\xac\x02" and varint(b"\xac\x02", 0) == (300, 2)
