"""The synthetic corpus generator: deterministic, within Bluesky's limits, shaped like void's repo."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from void_pipeline.testworld.corpus import (
    MAX_POST_CHARS,
    MEMORY,
    POST,
    REASONING,
    TOOL_CALL,
    Corpus,
    CorpusSpec,
    generate,
    tid,
    walk_values,
)

TID_PATTERN = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")


def test_same_seed_gives_same_records_and_manifest() -> None:
    spec = CorpusSpec(seed=3, agent_posts=300)
    first, second = generate(spec), generate(spec)
    assert [r.value for r in first.records] == [r.value for r in second.records]
    assert first.manifest_rows() == second.manifest_rows()


def test_different_seed_gives_different_corpus() -> None:
    a = generate(CorpusSpec(seed=3, agent_posts=300))
    b = generate(CorpusSpec(seed=4, agent_posts=300))
    assert [r.value.get("text") for r in a.records] != [r.value.get("text") for r in b.records]


def test_agent_post_count_is_the_scale_parameter(corpus: Corpus) -> None:
    agent_posts = [r for r in corpus.records if r.author == corpus.agent.handle and r.collection == POST]
    assert len(agent_posts) == corpus.spec.agent_posts


def test_posts_respect_the_300_character_limit() -> None:
    corpus = generate(CorpusSpec(seed=5, agent_posts=3000))
    lengths = [len(r.value["text"]) for r in corpus.records if r.collection == POST]
    assert max(lengths) <= MAX_POST_CHARS
    assert min(lengths) > 0


def test_records_never_contain_floats(corpus: Corpus) -> None:
    kinds = {type(v) for r in corpus.records for v in walk_values(r.value)}
    assert float not in kinds
    assert kinds <= {str, int, bool}


def test_facets_index_the_utf8_bytes_of_their_text(corpus: Corpus) -> None:
    checked = 0
    for record in corpus.records:
        for facet in record.value.get("facets", []):
            text_bytes = record.value["text"].encode()
            span = text_bytes[facet["index"]["byteStart"] : facet["index"]["byteEnd"]].decode()
            feature = facet["features"][0]
            if feature["$type"].endswith("#mention"):
                assert span == "@" + feature["did"]["$didOf"]
            else:
                assert span == feature["uri"]
            checked += 1
    assert checked > 50


def test_thread_shape_matches_void(corpus: Corpus) -> None:
    posts = [r for r in corpus.records if r.collection == POST]
    agent = [r for r in posts if r.author == corpus.agent.handle]
    replies = [r for r in agent if "reply" in r.value]
    assert len(replies) / len(agent) > 0.95  # void: 99% replies
    depths = Counter(r.depth for r in replies)
    assert min(depths) == 1 and max(depths) >= 8
    # multi-post chains: the agent replying to its own post
    keys = {r.key: r for r in posts}
    chained = [r for r in agent if r.parent and keys[r.parent].author == corpus.agent.handle]
    assert len(chained) > 0.1 * len(agent)
    assert any("embed" in r.value for r in agent)
    assert {tuple(r.value["langs"]) for r in posts} >= {("en",), ("ja",)}


def test_reply_refs_point_to_earlier_posts_of_the_same_thread(corpus: Corpus) -> None:
    by_key = corpus.by_key()
    position = {r.key: i for i, r in enumerate(corpus.records)}
    for record in corpus.records:
        reply = record.value.get("reply")
        if not reply:
            continue
        parent, root = reply["parent"]["$strongRef"], reply["root"]["$strongRef"]
        assert parent == record.parent and root == record.thread
        assert position[parent] < position[record.key]
        assert by_key[parent].created_at < record.created_at
        assert by_key[parent].thread == root


def test_loop_content_share_and_labels() -> None:
    corpus = generate(CorpusSpec(seed=9, agent_posts=2000, memory_loop_share=0.46))
    memory = [r for r in corpus.records if r.collection == MEMORY]
    share = sum(r.loop for r in memory) / len(memory)
    assert share == pytest.approx(0.46, abs=0.005)
    assert any(r.loop for r in corpus.records if r.collection == POST)
    # a different share is honoured
    other = generate(CorpusSpec(seed=9, agent_posts=2000, memory_loop_share=0.1))
    other_memory = [r for r in other.records if r.collection == MEMORY]
    assert sum(r.loop for r in other_memory) / len(other_memory) == pytest.approx(0.1, abs=0.005)


def test_cognition_records_use_the_real_field_names(corpus: Corpus) -> None:
    fields = {
        REASONING: "reasoning",
        MEMORY: "content",
        TOOL_CALL: "tool_name",
    }
    for collection, name in fields.items():
        records = [r for r in corpus.records if r.collection == collection]
        assert records, collection
        assert all(isinstance(r.value[name], str) and r.value["$type"] == collection for r in records)
        assert all(r.author == corpus.agent.handle for r in records)


def test_noise_is_seeded_and_labelled(corpus: Corpus) -> None:
    by_key = corpus.by_key()
    shorts = [r for r in corpus.records if r.short]
    dups = [r for r in corpus.records if r.duplicate_of]
    deleted = [r for r in corpus.records if r.deleted]
    assert shorts and all(len(r.value["text"]) < 20 for r in shorts)
    assert dups and all(r.duplicate_of and r.value["text"] == by_key[r.duplicate_of].value["text"] for r in dups)
    assert deleted and all(r.author != corpus.agent.handle for r in deleted)
    assert any(r.parent in {d.key for d in deleted} for r in corpus.records)


def test_record_keys_are_unique_tids_per_repo(corpus: Corpus) -> None:
    keys = [r.key for r in corpus.records]
    assert len(keys) == len(set(keys))
    assert all(TID_PATTERN.match(r.rkey) for r in corpus.records)
    assert tid(1) < tid(2) < tid(2**40)  # sortable


@pytest.mark.parametrize("bad", [{"agent_posts": 0}, {"other_accounts": 1}, {"memory_loop_share": 1.5}])
def test_invalid_spec_is_rejected_with_a_clear_error(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        CorpusSpec(**bad)  # type: ignore[arg-type]
