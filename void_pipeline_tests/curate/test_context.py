"""The context window: the shipped snapshot has the real one's shape; trimming fits budgets and keeps the persona."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from void_pipeline.defs.curate.assets import DEMO_SNAPSHOT
from void_pipeline.lib.curate.context import SnapshotError, distilled_window, full_window, load_snapshot, trimmed_window
from void_pipeline.lib.curate.prompt import TOOL_DESCRIPTION
from void_pipeline.lib.model import TokenCounter
from void_pipeline.testworld.corpus import Corpus, record_text
from void_pipeline.testworld.tiny_tokenizer import train_tokenizer

SIZES = {  # the real snapshot's block sizes in characters (README, Curate)
    "operational_protocols": 18900,
    "communication_guidelines": 6000,
    "tool_use_guide": 5900,
    "void-persona": 5100,
    "known_bots": 4000,
    "hypothesis": 3600,
    "skills": 2900,
    "ice_protocol": 2700,
    "zeitgeist": 450,
}


@pytest.fixture(scope="module")
def counter(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> TokenCounter:
    texts = [record_text(r.value) for r in corpus.records]
    texts += [p.read_text() for p in DEMO_SNAPSHOT.rglob("*.md")]
    return TokenCounter.load(train_tokenizer(texts, tmp_path_factory.mktemp("tok"), vocab_size=2048))


def test_the_demo_snapshot_has_the_real_ones_shape() -> None:
    snapshot = load_snapshot(DEMO_SNAPSHOT)
    blocks = {b.label: b.text for b in snapshot.blocks}
    assert len(blocks) == 25 and sum(1 for t in blocks.values() if not t) == 2
    for label, size in SIZES.items():
        assert abs(len(blocks[label]) - size) <= 0.02 * size + 5, label
    total = len(snapshot.system_prompt) + sum(len(t) for t in blocks.values())
    assert abs(total - 64561) < 500 and abs(len(snapshot.system_prompt) - 5618) < 60
    assert snapshot.persona_block == "void-persona"


@pytest.mark.parametrize("budget", [1500, 3000, 6000])
def test_trimming_stays_under_budget_and_keeps_the_persona(counter: TokenCounter, budget: int) -> None:
    snapshot = load_snapshot(DEMO_SNAPSHOT)
    window = trimmed_window(snapshot, counter, budget)
    assert window.tokens <= budget
    report = {b.label: b for b in window.blocks}
    assert report["void-persona"].status in {"kept", "cut"} and "<void-persona>" in window.text
    full = full_window(snapshot, counter)
    assert window.tokens < full.tokens
    cut = [block for block in snapshot.blocks if report[block.label].status == "cut"]
    assert cut, "no block was cut at this budget: the paragraph rule below would check nothing"
    for block in cut:  # a cut block keeps whole paragraphs from its start
        kept = window.text.split(f"<{block.label}>\n", 1)[1].split(f"\n</{block.label}>", 1)[0]
        assert block.text.startswith(kept) and (block.text[len(kept) :].startswith("\n\n"))


def test_priorities_decide_what_survives(counter: TokenCounter) -> None:
    window = trimmed_window(load_snapshot(DEMO_SNAPSHOT), counter, 3000)
    report = {b.label: b.status for b in window.blocks}
    assert report["void-persona"] == "kept" and report["communication_guidelines"] in {"kept", "cut"}
    assert report["scratchpad"] == "dropped" and report["todo"] == "empty"


def test_distilled_is_ten_times_smaller_than_full(counter: TokenCounter) -> None:
    snapshot = load_snapshot(DEMO_SNAPSHOT)
    distilled = distilled_window(snapshot, counter, TOOL_DESCRIPTION)
    assert distilled.tokens * 10 <= full_window(snapshot, counter).tokens
    assert "I am void" in distilled.text and "add_post_to_bluesky_reply_thread" in distilled.text


def test_a_budget_below_the_system_prompt_is_a_clear_error(counter: TokenCounter) -> None:
    with pytest.raises(SnapshotError, match=r"system prompt alone is .* over the budget of 10"):
        trimmed_window(load_snapshot(DEMO_SNAPSHOT), counter, 10)


def test_a_broken_snapshot_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match=r"no manifest\.json"):
        load_snapshot(tmp_path)
    (tmp_path / "manifest.json").write_text(
        json.dumps({"snapshot_date": "2026-02-13", "system_prompt": "s.md", "blocks": [{"label": "a", "file": "a.md"}]})
    )
    with pytest.raises(SnapshotError, match="incomplete"):
        load_snapshot(tmp_path)


def test_without_a_tokenizer_counts_are_labelled_estimates(tmp_path: Path) -> None:
    estimate = TokenCounter.load(tmp_path, "qwen")
    assert not estimate.exact and "ESTIMATE" in estimate.source
    assert estimate.count("x" * 380) == 100
