"""Shadow-run day folders written by hand, as shadow_replies leaves them: the day's real replies, the models'
answers, its settings, or the reason it was skipped."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from void_pipeline.lib.ingest.threads import THREAD_SCHEMA
from void_pipeline.lib.layout import AgentRecord, DataLayout, DatasetPaths, ShadowDayPaths
from void_pipeline_tests.support.evaluation import generations

AGENT = "shadowed"


def prompt_for(text: str) -> str:
    return f'A post mentions you.\n\nTHE POST TO ANSWER:\n"@void {text}"\n\nTHE THREAD UP TO IT:\n...'


def write_day(
    paths: ShadowDayPaths,
    real: dict[str, list[str]],
    answers: dict[str, dict[str, list[str]]],
    settings: Mapping[str, object] | None = None,
) -> None:
    """``real``: example id → the agent's real posts; ``answers``: model → example id → its posts."""
    paths.root.mkdir(parents=True, exist_ok=True)
    ids = list(real)
    when = datetime.fromisoformat(paths.day).replace(hour=12, tzinfo=UTC)
    replies = pl.DataFrame(
        {
            "example_id": ids,
            "root_uri": [f"at://did:plc:someone/app.bsky.feed.post/{e}" for e in ids],
            "created_at": [when] * len(ids),
            "prompt": [prompt_for(f"what about {e}?") for e in ids],
            "calls": [real[e] for e in ids],
        },
        schema_overrides={"calls": pl.List(pl.String), "created_at": pl.Datetime("us", "UTC")},
    )
    replies.write_parquet(paths.replies)
    if answers:
        generations(answers).write_parquet(paths.generations)
    paths.settings.write_text(json.dumps(settings or {"models": sorted(answers)}))


def write_skipped(paths: ShadowDayPaths, reason: str) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.skipped.write_text(json.dumps({"reason": reason}))


def recorded_storage(root: Path) -> DataLayout:
    """A data root whose agent ingest has recorded (what every asset after ingest reads first)."""
    layout = DataLayout(root)
    record = AgentRecord.now(
        AGENT, "did:plc:shadowedagent", "shadowed.test", "http://127.0.0.1:1", "http://127.0.0.1:2"
    )
    layout.agent(AGENT).write_record(record)
    return layout


def write_served_dataset(root: Path, layout: DataLayout, agent_posts: list[str], other_posts: list[str]) -> Path:
    """An openai-format dataset whose train split holds ``agent_posts`` as reply calls, each answering one of
    ``other_posts`` (thread_context's ancestors for those replies): what the authorship classifier learns from."""
    dataset = root / "openai"
    dataset.mkdir(parents=True)
    ids = [f"at://did:plc:shadowedagent/app.bsky.feed.post/t{i}" for i in range(len(agent_posts))]
    rows = [
        {"messages": [{"role": "user", "content": "a mention"},
                      {"role": "assistant", "tool_calls": [{"function": {"name": "reply", "arguments": {"text": t}}}]}]}
        for t in agent_posts
    ]  # fmt: skip
    DatasetPaths(dataset).split("train").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pl.DataFrame({"example_id": ids, "split": ["train"] * len(ids)}).write_parquet(DatasetPaths(dataset).index)
    ancestors = [
        [{"uri": f"at://did:plc:other/app.bsky.feed.post/p{i}", "author_did": "did:plc:other", "text": text,
          "available": True}]
        for i, text in enumerate(other_posts)
    ]  # fmt: skip
    context = pl.DataFrame(
        {"uri": ids, "ancestors": ancestors}, schema_overrides={"ancestors": THREAD_SCHEMA["ancestors"]}
    )
    path = layout.agent(AGENT).ingest.thread_context
    path.parent.mkdir(parents=True, exist_ok=True)
    context.write_parquet(path)
    return dataset
