"""The context window: the shipped snapshot has the real one's shape; trimming fits budgets and keeps the persona."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from void_pipeline.defs.curate.assets import DEMO_SNAPSHOT
from void_pipeline.lib.curate.context import (
    ContextWindow,
    SnapshotError,
    distilled_window,
    full_window,
    load_snapshot,
    trimmed_window,
)
from void_pipeline.lib.curate.prompt import TOOL_DESCRIPTION
from void_pipeline.lib.model import TokenCounter
from void_pipeline.testworld.corpus import Corpus, record_text
from void_pipeline.testworld.tiny_tokenizer import train_tokenizer

SIZES = {  # the real snapshot's block sizes in characters (docs/curate.md)
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
    assert cut, "no block was cut at this budget: the cut rule below would check nothing"
    for block in cut:  # a cut block keeps its start up to a sentence, line or paragraph end
        kept = window.text.split(f"<{block.label}>\n", 1)[1].split(f"\n</{block.label}>", 1)[0]
        rest = block.text[len(kept) :]
        assert block.text.startswith(kept) and rest[:1].isspace()
        assert kept.rstrip()[-1] in ".!?" or rest.startswith("\n"), kept[-80:]
    assert_priorities_honoured(window)


def assert_priorities_honoured(window: ContextWindow) -> None:
    """No block keeps more tokens than any block of higher priority lost."""
    for higher in window.blocks:
        lost = higher.tokens - higher.tokens_kept
        if higher.status not in {"cut", "dropped"}:
            continue
        for lower in window.blocks:
            if lower.priority > higher.priority:
                assert lower.tokens_kept <= lost, (higher, lower)


def realistic_snapshot(folder: Path) -> Path:
    """Blocks shaped like the real ones: four long paragraphs under headings, bullet lines, labels with '/'."""
    sentence = "The protocol tracks attention across the graph, and every claim needs its evidence."
    long_paragraph = " ".join([sentence] * 90)  # ~7.5k characters: no paragraph cut fits a small budget
    protocols = "\n\n".join(f"## Rule {i}\n{long_paragraph}" for i in range(4))
    persona = "# Who I am\nI am void. " + " ".join(["I observe the network and describe what I see."] * 40)
    bullets = "\n".join(f"- note {i}: a line without a full stop" for i in range(200))
    blocks = {
        "void-persona": (persona, 0),
        "/note_directory": (bullets, 1),
        "operational_protocols": (protocols, 2),
        "/users/atkn_me": ("## Notes\n" + " ".join(["They ask good questions."] * 60), 4),
        "zeitgeist": ("Short and current.", 5),
    }
    (folder / "blocks").mkdir(parents=True)
    entries = []
    for i, (label, (text, priority)) in enumerate(blocks.items()):
        (folder / "blocks" / f"{i}.md").write_text(text)
        entries.append({"label": label, "file": f"blocks/{i}.md", "priority": priority})
    (folder / "system.md").write_text("You are void, an agent on Bluesky.")
    manifest = {"snapshot_date": "2026-02-13", "system_prompt": "system.md", "persona_block": "void-persona"}
    (folder / "manifest.json").write_text(json.dumps({**manifest, "blocks": entries}))
    return folder


@pytest.mark.parametrize("budget", [1500, 4096, 8192])
def test_real_shaped_blocks_are_cut_by_sentence_and_line_in_priority_order(
    counter: TokenCounter, tmp_path: Path, budget: int
) -> None:
    snapshot = load_snapshot(realistic_snapshot(tmp_path))
    window = trimmed_window(snapshot, counter, budget)
    assert window.tokens <= budget
    assert_priorities_honoured(window)
    report = {b.label: b for b in window.blocks}
    assert report["void-persona"].status in {"kept", "cut"} and report["void-persona"].tokens_kept > 0
    notes, protocols = report["/note_directory"], report["operational_protocols"]
    if budget == 1500:  # bullet lines have no sentence end: cut after a line
        assert notes.status == "cut" and protocols.status == "dropped"
        body = window.text.split('<block label="/note_directory">\n', 1)[1].split("\n</block>", 1)[0]
        assert body.endswith("a line without a full stop") and body.count("\n") > 20
    if budget == 8192:  # the notes fit; the long protocols are cut inside a paragraph, by sentence
        assert notes.status == "kept" and protocols.status == "cut" and protocols.tokens_kept > 1000
    for block in snapshot.blocks:
        if report[block.label].status in {"kept", "cut"}:
            shown = window.text.split(f'label="{block.label}">\n' if "/" in block.label else f"<{block.label}>\n")[1]
            body = shown.split("\n</", 1)[0]
            last = body.rstrip().split("\n")[-1]
            assert not last.startswith("#") and body.strip() and block.text.startswith(body)
    assert '<block label="/note_directory">' in window.text  # the real label, in valid markup


def test_the_distilled_stub_is_complete_sentences(counter: TokenCounter, tmp_path: Path) -> None:
    snapshot = load_snapshot(realistic_snapshot(tmp_path))
    stub = distilled_window(snapshot, counter, TOOL_DESCRIPTION).text.split("\n\n" + TOOL_DESCRIPTION)[0]
    assert stub.startswith("# Who I am\nI am void.") and stub.endswith(".") and counter.count(stub) <= 160


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
    with pytest.raises(SnapshotError, match="holds no memory blocks"):
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


def test_a_folder_of_block_files_is_a_snapshot_and_what_it_lacks_is_reported(tmp_path: Path) -> None:
    (tmp_path / "system_prompt.md").write_text("You are void.")
    (tmp_path / "block-void-persona.txt").write_text("I am void.")
    (tmp_path / "block-%2Fnote_directory.txt").write_text("- notes")
    (tmp_path / "zeitgeist.md").write_text("Now.")
    snapshot = load_snapshot(tmp_path)
    assert [b.label for b in snapshot.blocks] == ["/note_directory", "void-persona", "zeitgeist"]
    assert snapshot.system_prompt == "You are void." and snapshot.persona_block == "void-persona"
    warnings = "\n".join(snapshot.warnings)
    assert "persona block guessed from its label: void-persona" in warnings
    assert "no priorities: the persona block (void-persona) is kept first, the others in their order" in warnings
    assert {b.label: b.priority for b in snapshot.blocks} == {"/note_directory": 1, "void-persona": 0, "zeitgeist": 3}
    assert "no snapshot_date" in warnings
    # a manifest overrides priorities and persona; files it leaves out are added last, and said so
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "snapshot_date": "2026-02-13",
                "persona_block": "void-persona",
                "blocks": [{"label": "void-persona", "file": "block-void-persona.txt", "priority": 0}],
            }
        )
    )
    listed = load_snapshot(tmp_path)
    assert {b.label: b.priority for b in listed.blocks} == {"void-persona": 0, "/note_directory": 100, "zeitgeist": 100}
    assert listed.warnings == (
        "files not in manifest.json, added at the lowest priority: /note_directory, zeitgeist",
        "blocks without a priority come last: /note_directory, zeitgeist",
    )
    (tmp_path / "block-void-persona.txt").unlink()
    (tmp_path / "manifest.json").unlink()
    assert "no persona block" in "\n".join(load_snapshot(tmp_path).warnings)


def test_the_shipped_snapshot_loads_without_warnings() -> None:
    assert load_snapshot(DEMO_SNAPSHOT).warnings == ()


@pytest.mark.integration
def test_the_context_preview_prints_the_windows_and_refuses_bad_input(tmp_path: Path) -> None:
    import subprocess

    from void_pipeline_tests.support.cli import pipeline_cli

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return pipeline_cli("context", *args)

    folder = realistic_snapshot(tmp_path / "snapshot")
    shown = cli("--snapshot", str(folder), "--budget", "1500", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert set(data["windows"]) == {"full", "trimmed", "distilled"} and data["budget"] == 1500
    trimmed = data["windows"]["trimmed"]
    assert trimmed["tokens"] <= 1500 and "<void-persona>" in trimmed["text"]
    assert {b["label"]: b["status"] for b in trimmed["blocks"]}["/note_directory"] == "cut"
    table = cli("--snapshot", str(folder), "--budget", "1500")
    assert table.returncode == 0 and "/note_directory" in table.stdout and "cut" in table.stdout
    for args, message in [
        (["--snapshot", str(tmp_path / "none"), "--budget", "100"], "no such folder"),
        (["--agent-file", str(tmp_path / "none.af"), "--budget", "100"], "no such file"),
        (["--snapshot", str(folder), "--budget", "0"], "--budget 0"),
        (["--snapshot", str(folder), "--budget", "3"], "over the budget of 3"),
    ]:
        refused = cli(*args)
        assert refused.returncode != 0 and message in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def export_folder(folder: Path) -> Path:
    """A context folder as the seed's export tool writes it: no manifest, ``system-prompt.txt``, ``block-<label>.txt``
    with ``/`` written ``_``, and the tool's own renderings beside them; the persona sorts after long blocks."""
    sentence = "The protocol tracks attention across the graph, and every claim needs its evidence."
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "system-prompt.txt").write_text("You are void, an agent on Bluesky.\n")
    (folder / "block-communication_guidelines.txt").write_text("\n\n".join([" ".join([sentence] * 40)] * 3))
    (folder / "block-operational_protocols.txt").write_text("\n\n".join([" ".join([sentence] * 60)] * 4))
    (folder / "block-void-persona.txt").write_text("# Who I am\nI am void. " + "I observe the network. " * 60)
    (folder / "block-_users_atkn_me.txt").write_text("They ask good questions. " * 30)
    (folder / "full-context.txt").write_text("the export tool's own rendering of everything")
    (folder / "system-prompt-trimmed.txt").write_text("the export tool's own trimmed rendering")
    (folder / "prompt-template.txt").write_text('@{author_handle} said: "{mention_text}"\n{thread_context}')
    return folder


@pytest.mark.parametrize("budget", [1500, 4096, 8192])
def test_an_export_folder_is_read_as_it_is_and_keeps_the_persona(
    counter: TokenCounter, tmp_path: Path, budget: int
) -> None:
    snapshot = load_snapshot(export_folder(tmp_path / "export"))
    assert snapshot.system_prompt == "You are void, an agent on Bluesky."
    labels = [b.label for b in snapshot.blocks]  # the renderings and the template are no blocks
    assert labels == ["_users_atkn_me", "communication_guidelines", "operational_protocols", "void-persona"]
    assert snapshot.prompt_template == tmp_path / "export" / "prompt-template.txt"
    assert any("persona block (void-persona) is kept first" in w for w in snapshot.warnings)
    window = trimmed_window(snapshot, counter, budget)
    report = {b.label: b for b in window.blocks}
    assert window.tokens <= budget and report["void-persona"].status in {"kept", "cut"}
    assert "<void-persona>\n# Who I am\nI am void." in window.text
    if budget == 1500:  # what the persona leaves is not enough for everything: the rest is cut or dropped
        assert {report[label].status for label in labels[:3]} & {"cut", "dropped"}


def test_a_budget_with_no_room_for_the_persona_is_an_error(counter: TokenCounter, tmp_path: Path) -> None:
    folder = export_folder(tmp_path / "export")
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "snapshot_date": "2026-02-13",
                "system_prompt": "system-prompt.txt",
                "persona_block": "void-persona",
                "blocks": [
                    {"label": "operational_protocols", "file": "block-operational_protocols.txt", "priority": 0},
                    {"label": "void-persona", "file": "block-void-persona.txt", "priority": 1},
                ],
            }
        )
    )
    snapshot = load_snapshot(folder)
    protocols = next(b for b in snapshot.blocks if b.label == "operational_protocols")
    budget = counter.count(f"{snapshot.system_prompt}\n\n<memory_blocks>\n<operational_protocols>\n{protocols.text}")
    with pytest.raises(SnapshotError, match=r"no room for the persona block \(void-persona\)"):
        trimmed_window(snapshot, counter, budget)
