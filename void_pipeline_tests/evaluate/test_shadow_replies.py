"""shadow_replies: a day's replies of the agent chosen and rendered as the runtime asked them, who answers them
(the served bundle and the candidate), the day's folder resumed or started afresh, the skips, the automation; and on
the devnet, a fresh agent's replies of today answered by the served adapter and a candidate, with nothing posted."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from void_pipeline.defs.evaluate.shadow import shadow_daily, shadow_replies, shadow_sooner
from void_pipeline.defs.evaluate.shadow_report import shadow_report
from void_pipeline.lib.curate.prompt import PromptTemplate
from void_pipeline.lib.evaluate.generations import GENERATION_SCHEMA, Prompt
from void_pipeline.lib.evaluate.shadow import (
    NO_BUNDLE,
    REPLY_SCHEMA,
    day_turns,
    day_window,
    pending,
    shadow_models,
    sooner,
    start_day,
)
from void_pipeline.lib.handoffs import EvaluationPointer
from void_pipeline.lib.ingest.records import POST, RAW_SCHEMA
from void_pipeline.lib.ingest.threads import ANCESTOR_STRUCT, THREAD_SCHEMA
from void_pipeline.lib.layout import AgentLayout, AgentRecord, DataLayout, ShadowDayPaths
from void_pipeline.lib.serve.bundle import Promotion, add_bundle, make_current
from void_pipeline.lib.serve.client import Sampling
from void_pipeline.resources.server import InferenceServer
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline_tests.support.adapters import scaled_adapter
from void_pipeline_tests.support.bundles import adapter, dataset
from void_pipeline_tests.support.fresh_agent import FreshWorld
from void_pipeline_tests.support.ingest import list_all, materialize_ingest
from void_pipeline_tests.support.trainer import Trained

AGENT, OTHER = "did:plc:agent", "did:plc:other"
DAY = "2026-03-02"
TEMPLATE = "{author_handle} asks: {mention_text}\n{tree_view}"
NO_SERVER = InferenceServer(python="/nonexistent/python")  # a step that started a server would fail


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def uri(did: str, rkey: str) -> str:
    return f"at://{did}/app.bsky.feed.post/{rkey}"


def post(
    did: str, rkey: str, when: str, text: str, parent: str | None = None, root: str | None = None
) -> dict[str, Any]:
    parent_uri = uri(OTHER if parent.startswith("p") else AGENT, parent) if parent else None  # p…: other people's
    root_uri = uri(OTHER, root) if root else parent_uri
    return {"uri": uri(did, rkey), "did": did, "created_at": at(when), "text": text,
            "reply_parent_uri": parent_uri, "reply_root_uri": root_uri}  # fmt: skip


def posts_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={k: RAW_SCHEMA[k] for k in rows[0]})


def ancestor(rkey: str, text: str, available: bool = True) -> dict[str, Any]:
    return {"uri": uri(OTHER, rkey), "cid": f"cid-{rkey}", "author_did": OTHER, "author_handle": "other.test",
            "text": text if available else None, "created_at": "2026-03-02T09:00:00Z", "available": available,
            "reason": None if available else "deleted", "source": "export", "author_display_name": None,
            "record_json": None, "embed_json": None}  # fmt: skip


def context_frame(rows: dict[str, list[dict[str, Any]]]) -> pl.DataFrame:
    records = [{"uri": uri(AGENT, rkey), "parent_uri": chain[-1]["uri"], "root_uri": chain[0]["uri"],
                "depth": len(chain), "complete": True, "missing_reason": None, "ancestors": chain}
               for rkey, chain in rows.items()]  # fmt: skip
    return pl.DataFrame(records, schema={**THREAD_SCHEMA, "ancestors": pl.List(ANCESTOR_STRUCT)})


# The agent's posts around DAY: a two-post turn, a turn going on past midnight, a continuation of the day before,
# a reply thread_context has not fetched yet, replies to a deleted post and too long to post, a post that is no
# reply, and a reply of the next day. Loop content and a short text stay: training's filters are not the shadow's.
POSTS = [
    post(OTHER, "p1", "2026-03-02T09:00:00", "what is entropy?"),
    post(AGENT, "a1", "2026-03-02T10:00:00", "  Entropy is   missing\r\ninformation.  ", "p1"),
    post(AGENT, "a2", "2026-03-02T10:01:00", "character sheet: hit points 12, armor class 15", "a1", "p1"),
    post(AGENT, "b1", "2026-03-02T23:59:00", "Time is", "p2"),
    post(AGENT, "b2", "2026-03-03T00:05:00", "what entropy counts.", "b1", "p2"),
    post(AGENT, "c1", "2026-03-01T23:50:00", "yesterday's answer", "p3"),
    post(AGENT, "c2", "2026-03-02T00:02:00", "yesterday's answer, continued", "c1", "p3"),
    post(AGENT, "e1", "2026-03-02T12:00:00", "a reply without its thread yet", "p4"),
    post(AGENT, "h1", "2026-03-02T13:00:00", "a reply to a deleted post", "p6"),
    post(AGENT, "i1", "2026-03-02T14:00:00", "x" * 301, "p7"),
    post(AGENT, "g1", "2026-03-02T15:00:00", "a post of its own"),
    post(AGENT, "f1", "2026-03-03T00:30:00", "tomorrow's reply", "p5"),
]
CONTEXT = {
    "a1": [ancestor("p1", "what is entropy?")],
    "b1": [ancestor("p2", "and time?")],
    "c1": [ancestor("p3", "yesterday's question")],
    "h1": [ancestor("p6", "", available=False)],
    "i1": [ancestor("p7", "say a lot")],
    "f1": [ancestor("p5", "tomorrow's question")],
}


def test_a_day_s_turns_are_the_replies_the_agent_began_that_day_rendered_as_chat_data_renders_them() -> None:
    template = PromptTemplate(TEMPLATE, "test", "format")
    day = day_turns(posts_frame(POSTS), context_frame(CONTEXT), template, AGENT, "agent.test", None, DAY)
    assert day.turns.schema == pl.Schema(REPLY_SCHEMA)
    assert day.turns.to_dicts() == [
        {"example_id": uri(AGENT, "a1"), "root_uri": uri(OTHER, "p1"), "created_at": at("2026-03-02T10:00:00"),
         "prompt": "other.test asks: what is entropy?\n└─ @other.test: what is entropy?",
         "calls": ["Entropy is missing\ninformation.", "character sheet: hit points 12, armor class 15"]},
        {"example_id": uri(AGENT, "b1"), "root_uri": uri(OTHER, "p2"), "created_at": at("2026-03-02T23:59:00"),
         "prompt": "other.test asks: and time?\n└─ @other.test: and time?",
         "calls": ["Time is", "what entropy counts."]},
    ]  # fmt: skip
    assert day.replies == 7  # a1 a2 b1 c2 e1 h1 i1: g1 answers nobody, b2 and f1 are the next day's
    assert day.missing_context == [uri(AGENT, "e1")]
    assert day.skipped == {"deleted_upstream": 1, "invalid_call": 1}  # h1 answers a deleted post
    assert day.prompts()[0] == Prompt(uri(AGENT, "a1"), day.turns["prompt"][0], at("2026-03-02T10:00:00"))
    with pytest.raises(ValueError, match="shadow day '2026-13-02' is not a date"):
        day_window("2026-13-02")


def bundle_world(root: Path) -> AgentLayout:
    """An agent folder whose bundle v1 (adapter "prod", base /models/tiny) is current."""
    layout = DataLayout(root).agent("void")
    promotion = Promotion("/models/tiny", adapter(root / "prod", b"prod"), dataset(root / "data", template_text=TEMPLATE),
                          "void", "llama3_json", 8, Sampling(temperature=0.5, max_posts=3))  # fmt: skip
    make_current(layout.serve, add_bundle(layout.serve, promotion).version)
    return layout


def evaluated(root: Path, adapter_path: Path, base: str = "/models/tiny", report: bool = True) -> EvaluationPointer:
    folder = root / f"eval-{adapter_path.name}"
    folder.mkdir()
    if report:
        (folder / "report.json").write_text("{}")
    return EvaluationPointer(folder, root / "run", base, adapter_path, root / "data")


def test_the_candidate_is_the_latest_evaluated_adapter_beside_the_served_one_on_its_base(tmp_path: Path) -> None:
    serve = DataLayout(tmp_path).agent("void").serve
    assert shadow_models(serve, None) is None  # nothing served: the step skips
    layout = bundle_world(tmp_path)
    candidate = adapter(tmp_path / "cand", b"cand", rank=16)
    reasons = {
        "none": shadow_models(layout.serve, None),
        "same": shadow_models(layout.serve, evaluated(tmp_path, tmp_path / "prod")),
        "unreported": shadow_models(layout.serve, evaluated(tmp_path, candidate, report=False)),
    }
    assert {name: (m and m.names, m and m.no_candidate) for name, m in reasons.items()} == {
        "none": (["production"], "no evaluated adapter (materialize eval_generations and eval_report)"),
        "same": (["production"], f"the latest evaluated adapter is the served one ({tmp_path / 'prod'})"),
        "unreported": (["production"], f"{candidate} has no report yet (materialize eval_report)"),
    }
    other_base = shadow_models(layout.serve, evaluated(tmp_path / "prod", candidate, base="/models/other"))
    assert other_base is not None and other_base.names == ["production"]
    assert other_base.no_candidate == (f"{candidate} is on /models/other, the served bundle on /models/tiny: "
                                       "adapters served together share one base model")  # fmt: skip
    both = shadow_models(layout.serve, evaluated(tmp_path / "cand", candidate))
    assert both is not None and both.names == ["production", "candidate"]
    spec = both.server_spec("float32", {}, 4096, ())
    served = layout.serve.bundle(1)
    assert dict(spec.adapters) == {"production": str(served.adapter), "candidate": str(candidate)}
    assert (spec.model, spec.lora_rank, spec.max_loras) == ("/models/tiny", 16, 2)
    assert spec.chat_template == str(served.chat_template)


def test_a_day_resumes_its_answers_and_starts_afresh_for_another_model_set(tmp_path: Path) -> None:
    paths = ShadowDayPaths(tmp_path / DAY)
    first = {"models": ["production"], "sampling": {"seed": 0}}
    assert start_day(paths, first) is False
    rows = [{"example_id": "e1", "model": "production", "sample": 0, "error": None},
            {"example_id": "e2", "model": "production", "sample": 0, "error": "server gone"}]  # fmt: skip
    paths.generations_log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths.skipped.write_text("{}")
    prompts = [Prompt("e1", "p"), Prompt("e2", "p")]
    assert start_day(paths, first) is False and not paths.skipped.exists()
    assert pending(paths, prompts, ["production"], 1) == 1  # e2's error is asked again
    assert pending(paths, prompts, ["production", "candidate"], 1) == 3
    assert start_day(paths, {**first, "models": ["production", "candidate"]}) is True
    assert not paths.generations_log.exists()
    assert pending(paths, prompts, ["production"], 1) == 2
    settings = json.loads(paths.settings.read_text())
    assert settings["models"] == ["production", "candidate"] and len(settings["fingerprint"]) == 12


def materialize_day(storage: PipelineStorage, day: str = DAY) -> Mapping[str, Any]:
    result = dg.materialize([shadow_replies], partition_key=day, resources={"storage": storage, "server": NO_SERVER})
    assert result.success
    return result.asset_materializations_for_node("shadow_replies")[0].metadata


def test_without_a_served_model_the_day_is_skipped_with_the_reason(tmp_path: Path) -> None:
    storage = PipelineStorage(root=str(tmp_path), agent="void")
    metadata = materialize_day(storage)
    assert metadata["skipped"].value == "skipped: no model is served (materialize served_model first)"
    paths = storage.agent_layout.shadow.day(DAY)
    assert json.loads(paths.skipped.read_text())["reason"] == NO_BUNDLE
    assert not paths.replies.exists() and not paths.generations.exists()


def test_a_day_without_replies_writes_empty_tables_and_starts_no_server(tmp_path: Path) -> None:
    layout = bundle_world(tmp_path)
    layout.write_record(AgentRecord("void", AGENT, "agent.test", "http://pds.test", "http://plc.test", "2026-03-05"))
    layout.ingest.records("app.bsky.feed.post").parent.mkdir(parents=True)
    posts_frame(POSTS).write_parquet(layout.ingest.records("app.bsky.feed.post"))
    metadata = materialize_day(PipelineStorage(root=str(tmp_path), agent="void"), "2026-03-05")
    paths = layout.shadow.day("2026-03-05")
    assert pl.read_parquet(paths.replies).schema == pl.Schema(REPLY_SCHEMA)
    assert pl.read_parquet(paths.replies).height == 0
    assert pl.read_parquet(paths.generations).schema == pl.Schema(GENERATION_SCHEMA)
    assert pl.read_parquet(paths.generations).height == 0
    assert metadata["note"].value == "no agent replies to answer on 2026-03-05"
    assert metadata["server_start_s"].value == "no server started"
    assert metadata["models"].value["candidate"] == {
        "none": "no evaluated adapter (materialize eval_generations and eval_report)"
    }


def test_the_schedule_shadows_yesterday_and_the_sensor_today_at_most_once_an_hour(tmp_path: Path) -> None:
    storage = PipelineStorage(root=str(tmp_path), agent="void")
    tick = datetime(2026, 3, 3, 6, 30, tzinfo=UTC)
    skipped = shadow_daily(dg.build_schedule_context(scheduled_execution_time=tick, resources={"storage": storage}))
    assert isinstance(skipped, dg.SkipReason) and skipped.skip_message == f"skipped: {NO_BUNDLE}"
    bundle_world(tmp_path)
    request = shadow_daily(dg.build_schedule_context(scheduled_execution_time=tick, resources={"storage": storage}))
    assert isinstance(request, dg.RunRequest) and (request.partition_key, request.run_key) == (DAY, f"shadow-{DAY}")

    ten = datetime(2026, 3, 2, 10, 5, tzinfo=UTC)
    chosen = sooner(None, "m1", ten)
    assert isinstance(chosen, tuple)
    day, key, cursor = chosen
    assert (day, key) == (DAY, "shadow-2026-03-02T10")
    assert sooner(cursor, "m1", ten + timedelta(hours=2)) == "no thread_context since the last shadow run was asked"
    assert sooner(cursor, "m2", ten + timedelta(minutes=50)) == (
        "a shadow run was asked this hour (2026-03-02T10 UTC): the next waits for the next hour"
    )
    assert sooner(cursor, "m2", ten + timedelta(minutes=55))[:2] == (DAY, "shadow-2026-03-02T11")

    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"storage": storage})
        never = shadow_sooner(context)
        assert isinstance(never, dg.SkipReason) and "never materialized" in str(never.skip_message)
        instance.report_runless_asset_event(dg.AssetMaterialization("thread_context"))
        result = shadow_sooner(dg.build_sensor_context(instance=instance, resources={"storage": storage}))
        assert isinstance(result, dg.SensorResult) and len(result.run_requests or []) == 1
        asked: Any = (result.run_requests or [])[0]
        assert asked.partition_key == asked.run_key[len("shadow-") : len("shadow-") + 10]


@pytest.mark.integration
def test_a_fresh_agent_s_replies_today_are_answered_by_the_served_adapter_and_the_candidate_and_nothing_is_posted(
    devnet: DevnetInfo, curated: dict[str, Any], trained: Trained, trainer_bin: Path, tmp_path: Path
) -> None:
    latest = curated["storage"].agent_layout.train.read_latest()  # the session's adapter, trained before these posts
    assert latest is not None
    now = datetime.now(UTC)
    start = min(now, day_window(now.strftime("%Y-%m-%d"))[1] - timedelta(minutes=1))  # the posts stay on one day
    world = FreshWorld.create(devnet, "shadow")
    q1 = world.post(world.other, "what does a thermostat know?", created_at=start)
    r1 = world.post(world.agent, "it knows one number.", reply_to=q1, created_at=start + timedelta(seconds=1))
    world.post(world.agent, "and it acts on it.", reply_to=r1, created_at=start + timedelta(seconds=2))
    q2 = world.post(world.other, "is memory a kind of entropy?", created_at=start + timedelta(seconds=3))
    r2 = world.post(world.agent, "memory is low entropy, kept.", reply_to=q2, created_at=start + timedelta(seconds=4))
    storage = PipelineStorage(root=str(tmp_path), agent="shadow")
    materialize_ingest(world.endpoint(), storage)
    layout = storage.agent_layout
    sampling = Sampling(temperature=0.0, max_tokens=24, max_posts=2, seed=5)
    promotion = Promotion(latest.base_model, latest.adapter, latest.dataset, "shadow", "llama3_json", 8, sampling)
    make_current(layout.serve, add_bundle(layout.serve, promotion).version)
    # scaled far from the served one: greedy answers of a 12-step adapter scaled by 4 still tied with it now and then
    candidate = scaled_adapter(trained.adapter, tmp_path / "candidate", 40.0)
    if (trained.adapter / "chat_template.jinja").exists():
        (candidate / "chat_template.jinja").write_bytes((trained.adapter / "chat_template.jinja").read_bytes())
    layout.evaluate.write_latest(evaluated(tmp_path, candidate, base=latest.base_model))
    before = {
        a.handle: (world.latest_rev(a), len(list_all(a.pds_url, a.did, POST))) for a in (world.agent, world.other)
    }

    day, server = start.strftime("%Y-%m-%d"), InferenceServer(cpu=True, max_model_len=4096)
    resources = {"storage": storage, "server": server}
    config = {"ops": {"shadow_replies": {"config": {"concurrency": 4}}}}
    first = dg.materialize([shadow_replies], partition_key=day, resources=resources, run_config=config)
    assert first.success
    shown = first.asset_materializations_for_node("shadow_replies")[0].metadata
    counts = {k: shown[k].value for k in ("replies", "turns", "answered_production", "answered_candidate", "errors")}
    assert counts == {"replies": 3, "turns": 2, "answered_production": 2, "answered_candidate": 2, "errors": 0}
    assert shown["generated_now"].value == 4 and isinstance(shown["seconds_per_100_replies"].value, float)
    paths = layout.shadow.day(day)
    replies = pl.read_parquet(paths.replies)
    assert replies["example_id"].to_list() == [r1.uri, r2.uri]
    assert replies["calls"].to_list() == [
        ["it knows one number.", "and it acts on it."],
        ["memory is low entropy, kept."],
    ]
    assert "what does a thermostat know?" in replies["prompt"][0] and world.other.handle in replies["prompt"][0]
    rows = pl.read_parquet(paths.generations)
    assert sorted(rows.select("example_id", "model").iter_rows()) == [
        (r1.uri, "candidate"), (r1.uri, "production"), (r2.uri, "candidate"), (r2.uri, "production")
    ]  # fmt: skip
    raw = {(e, m): r for e, m, r in rows.select("example_id", "model", "raw").iter_rows()}
    assert any(raw[(e, "production")] != raw[(e, "candidate")] for e in (r1.uri, r2.uri))  # two adapters answered
    after = {a.handle: (world.latest_rev(a), len(list_all(a.pds_url, a.did, POST))) for a in (world.agent, world.other)}
    assert after == before  # no record written to either repository: nothing was posted

    again = dg.materialize([shadow_replies], partition_key=day, resources=resources, run_config=config)
    assert again.success
    resumed = again.asset_materializations_for_node("shadow_replies")[0].metadata
    assert (resumed["generated_now"].value, resumed["kept_from_an_earlier_run"].value) == (0, 4)
    assert resumed["server_start_s"].value == "no server started"
    assert pl.read_parquet(paths.generations).sort("example_id", "model").equals(rows.sort("example_id", "model"))

    # the day's report reads what shadow_replies wrote: both models scored against the real replies, similarity
    # measured in the trainer environment through Pipes
    reporting = {
        "storage": storage,
        "trainer": Trainer(python=str(trainer_bin / "python")),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }
    report = dg.materialize([shadow_report], partition_key=day, resources=reporting)
    assert report.success
    scored: Any = report.asset_materializations_for_node("shadow_report")[0].metadata
    assert scored["status"].value == "reported" and scored["replies"].value == 2
    assert len(scored["worst_pairs"].records) == 2 and paths.trend_plot.stat().st_size > 0
    # similarity is reported for exactly the models whose answers held a post (the session's tiny model may write
    # none), never made up for the others
    answered = {m for m, posts in rows.select("model", "posts").iter_rows() if posts}
    measured = {m for m in ("production", "candidate") if f"{m}_semantic_similarity_cosine" in scored}
    assert measured == answered, (measured, answered)
    assert all(-1.0 <= scored[f"{m}_semantic_similarity_cosine"].value <= 1.0 for m in measured)
    assert [c.check_name for c in report.get_asset_check_evaluations()] == ["candidate_not_below_production"]
