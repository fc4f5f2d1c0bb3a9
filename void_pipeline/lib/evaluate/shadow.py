"""The shadow run's generation side: the agent's replies of one UTC day, rendered as the requests the runtime sent,
answered by the served model (``production``) and the candidate beside it, never posted.

A day's turns are chat data's turns (lib/curate/dataset.py ``build_examples``: a reply to someone else plus the agent's
consecutive continuations), rendered with the serving bundle's prompt template, handler profile and request profile —
the ones the served model was trained with — for the thread as thread_context holds it, which is the thread as it
stood before the reply. Every real mention is answered: filtered_records' filters (loop content, duplicates, length)
are training's, not the shadow's; only turns that cannot be asked (an unavailable parent, a reply that is not a valid
call) are left out and counted.

The answers are evaluation's generations (lib/evaluate/generations.py) in the day's folder: appended as they come,
resumed by the next run; a changed model set (another bundle, another candidate, other sampling) starts the day
afresh (settings.json holds the fingerprint).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from void_pipeline.lib.curate.dataset import build_examples
from void_pipeline.lib.curate.filters import normalised_text
from void_pipeline.lib.curate.prompt import PromptTemplate, post_answered
from void_pipeline.lib.evaluate.generations import GenerationRun, Prompt, fingerprint, read_rows, settings_record
from void_pipeline.lib.evaluate.metrics import valid_answer
from void_pipeline.lib.files import write_parquet_atomic, write_text_atomic
from void_pipeline.lib.handoffs import EvaluationPointer
from void_pipeline.lib.layout import EvaluationPaths, ServePaths, ShadowDayPaths
from void_pipeline.lib.report import Table
from void_pipeline.lib.serve.bundle import Bundle, BundleError, check_adapter, current_bundle, server_spec
from void_pipeline.lib.serve.vllm_server import ServerSpec

PRODUCTION, CANDIDATE = "production", "candidate"
NO_BUNDLE = "no model is served (materialize served_model first)"
MISSING_CONTEXT = "materialize thread_context"
# The columns evaluation's held-out frame has (DatasetPaths.heldout), so its code reads a day's turns as it reads those.
REPLY_SCHEMA: dict[str, pl.DataType] = {
    "example_id": pl.String(),
    "root_uri": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "prompt": pl.String(),
    "calls": pl.List(pl.String()),
}
# A turn that starts before midnight may go on after it: its continuations are looked for this long after the day.
CONTINUATION_SLACK = timedelta(hours=1)
PREVIEW_ROWS = 5
TEXT_SHOWN = 160


def day_window(day: str) -> tuple[datetime, datetime]:
    """The UTC day ``day`` (YYYY-MM-DD) as [start, end); ValueError naming it when it is not a date."""
    try:
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as err:
        raise ValueError(f"shadow day {day!r} is not a date (YYYY-MM-DD)") from err
    return start, start + timedelta(days=1)


@dataclass(frozen=True)
class DayTurns:
    """The day's turns (REPLY_SCHEMA) and what was left out of them."""

    day: str
    replies: int  # the agent's replies posted that day (every post of a turn counts)
    turns: pl.DataFrame
    missing_context: list[str]  # replies thread_context has no row for yet (answered once it has)
    skipped: dict[str, int]  # build_examples' reasons for the rest (parent_unavailable, invalid_call, ...)

    def prompts(self) -> list[Prompt]:
        """Each turn asked at the reply's own time (what a letta profile's system message shows)."""
        rows = self.turns.select("example_id", "prompt", "created_at").iter_rows()
        return [Prompt(example_id, prompt, when) for example_id, prompt, when in rows]


def day_turns(
    posts: pl.DataFrame,
    context: pl.DataFrame,
    template: PromptTemplate,
    agent_did: str,
    agent_handle: str | None,
    handler: str | None,
    day: str,
) -> DayTurns:
    """The turns the agent started on ``day`` (UTC), rendered as chat data renders them. ``posts``: raw_records' post
    table (RAW_SCHEMA); ``context``: thread_context's rows (THREAD_SCHEMA)."""
    start, end = day_window(day)
    own = f"at://{agent_did}/"
    mine = posts.filter(
        (pl.col("did") == agent_did)
        & (pl.col("created_at") >= start)
        & (
            (pl.col("created_at") < end)
            | ((pl.col("created_at") < end + CONTINUATION_SLACK) & pl.col("reply_parent_uri").str.starts_with(own))
        )
    )
    replies = mine.filter((pl.col("created_at") < end) & pl.col("reply_parent_uri").is_not_null())
    heads = replies.filter(~pl.col("reply_parent_uri").str.starts_with(own))["uri"]
    missing = sorted(set(heads.to_list()) - set(context["uri"].to_list()))
    asked = mine.filter(~pl.col("uri").is_in(missing))
    asked = asked.with_columns(normalised_text(asked["text"]).alias("text_norm"))  # curate's, not its filters
    rows = context.filter(pl.col("uri").is_in(asked["uri"].implode()))  # the day's threads, not the whole history
    examples, stats = build_examples(asked, rows, template, agent_did, agent_handle, handler=handler)
    turns = (
        examples.filter((pl.col("created_at") >= start) & (pl.col("created_at") < end))
        .select(list(REPLY_SCHEMA))
        .sort("created_at", "example_id")
    )
    # a continuation of a turn begun the day before is that day's; a post that is no reply is no mention answered
    skipped = {k: v for k, v in stats.skipped.items() if k not in ("chain_head_filtered", "not_a_reply")}
    return DayTurns(day, replies.height, turns, missing, skipped)


@dataclass(frozen=True)
class ShadowModels:
    """Who answers: the current bundle's adapter as ``production`` and, when there is one on the same base, the
    latest evaluated adapter as ``candidate``."""

    bundle: Bundle
    candidate: Path | None = None  # the candidate adapter's folder
    candidate_rank: int = 0
    evaluation: Path | None = None  # the candidate's evaluation folder
    no_candidate: str | None = None  # why there is none

    @property
    def names(self) -> list[str]:
        return [PRODUCTION, *([CANDIDATE] if self.candidate else [])]

    def described(self) -> dict[str, Any]:
        """What each name stands for (settings.json, the metadata): a changed value starts the day afresh."""
        bundle = self.bundle
        production = {
            "bundle": bundle.version,
            "adapter": bundle.source.get("adapter", str(bundle.paths.adapter)),
            "base_model": bundle.base_model,
            "model_version": bundle.source.get("model_version"),
        }
        candidate = (
            {"adapter": str(self.candidate), "evaluation": str(self.evaluation)}
            if self.candidate
            else {"none": self.no_candidate}
        )
        return {PRODUCTION: production, CANDIDATE: candidate}

    def server_spec(
        self, dtype: str, env: dict[str, str], max_model_len: int | None, extra_args: tuple[str, ...]
    ) -> ServerSpec:
        """The bundle's server (its base, parser and chat template) with the adapters under the shadow's names."""
        spec = server_spec(self.bundle, dtype, env, max_model_len, extra_args)
        adapters = {PRODUCTION: str(self.bundle.paths.adapter)}
        if self.candidate:
            adapters[CANDIDATE] = str(self.candidate)
        rank = max(self.bundle.lora_rank, self.candidate_rank)
        return replace(spec, adapters=adapters, lora_rank=rank, max_loras=len(adapters))


def shadow_models(serve: ServePaths, evaluated: EvaluationPointer | None) -> ShadowModels | None:
    """The models of a shadow run; None when no bundle is current. The candidate is the latest evaluated adapter (its
    report written: eval_report aliased it ``candidate`` or ``champion``) when it is not the bundle's own; one on
    another base model is left out with the reason (adapters served together share one base: it is shadowed once
    it is promoted). BundleError when the current bundle is damaged."""
    bundle = current_bundle(serve)
    if bundle is None:
        return None
    if evaluated is None:
        return ShadowModels(bundle, no_candidate="no evaluated adapter (materialize eval_generations and eval_report)")
    served = Path(str(bundle.source.get("adapter", bundle.paths.adapter)))
    if evaluated.adapter.resolve() == served.resolve():
        return ShadowModels(bundle, no_candidate=f"the latest evaluated adapter is the served one ({served})")
    if not EvaluationPaths(evaluated.folder).report.exists():
        return ShadowModels(bundle, no_candidate=f"{evaluated.adapter} has no report yet (materialize eval_report)")
    if evaluated.base_model != bundle.base_model:
        why = f"{evaluated.adapter} is on {evaluated.base_model}, the served bundle on {bundle.base_model}"
        return ShadowModels(bundle, no_candidate=f"{why}: adapters served together share one base model")
    try:
        check_adapter(evaluated.adapter)
        rank = int(json.loads((evaluated.adapter / "adapter_config.json").read_text()).get("r") or 0)
    except (BundleError, ValueError) as err:
        return ShadowModels(bundle, no_candidate=f"the candidate cannot be served: {err}")
    return ShadowModels(bundle, evaluated.adapter, rank, evaluated.folder)


def day_settings(models: ShadowModels, day: str) -> dict[str, Any]:
    """What a day's answers depend on; its fingerprint names the set."""
    return settings_record(models.bundle.sampling, day=day, models=models.names, shadow=models.described())


def start_day(paths: ShadowDayPaths, settings: dict[str, Any]) -> bool:
    """Write the day's settings.json; when the fingerprint differs from the one there, the answers of the other model
    set are removed first (the day starts afresh). True when it did. skipped.json goes: this run answers."""
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.skipped.unlink(missing_ok=True)
    wanted = fingerprint(settings)
    try:
        before = json.loads(paths.settings.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        before = None
    fresh = before != wanted and (paths.generations_log.exists() or paths.generations.exists())
    if fresh:
        paths.generations_log.unlink(missing_ok=True)
        paths.generations.unlink(missing_ok=True)
    write_text_atomic(paths.settings, json.dumps({**settings, "fingerprint": wanted}, indent=2, default=str))
    return fresh


def write_skipped(paths: ShadowDayPaths, reason: str) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    write_text_atomic(paths.skipped, json.dumps({"day": paths.day, "reason": reason, "at": now}, indent=2))


def pending(paths: ShadowDayPaths, prompts: list[Prompt], models: list[str], samples: int) -> int:
    """Answers not yet in the day's generations log (0: no server is needed)."""
    done = {
        (r["example_id"], r["model"], r["sample"]) for r in read_rows(paths.generations_log) if r.get("error") is None
    }
    return sum((p.example_id, m, s) not in done for p in prompts for m in models for s in range(samples))


def keep_turns(run: GenerationRun, paths: ShadowDayPaths, turns: pl.DataFrame) -> GenerationRun:
    """The generations of the day's current turns only: a reply gone since (deleted upstream) leaves the table."""
    rows = run.rows.filter(pl.col("example_id").is_in(turns["example_id"].implode()))
    if rows.height != run.rows.height:
        write_parquet_atomic(rows, paths.generations)
    return replace(run, rows=rows, reused=rows.height - run.generated)


def sooner(cursor: str | None, seen: str, now: datetime) -> tuple[str, str, str] | str:
    """The sensor that shadows today sooner: for thread_context materialization ``seen`` at ``now``, the day to shadow,
    the run's key and the new cursor; or why not (the materialization it asked for already, or a run asked this
    hour: at most one an hour, the changes in between wait for the next)."""
    try:
        last = json.loads(cursor) if cursor else {}
    except ValueError:
        last = {}
    last = last if isinstance(last, dict) else {}
    if seen == last.get("seen"):
        return "no thread_context since the last shadow run was asked"
    hour = now.astimezone(UTC).strftime("%Y-%m-%dT%H")
    if hour == last.get("hour"):
        return f"a shadow run was asked this hour ({hour} UTC): the next waits for the next hour"
    return hour[:10], f"shadow-{hour}", json.dumps({"seen": seen, "hour": hour})


def cut(text: str, width: int = TEXT_SHOWN) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def preview(turns: pl.DataFrame, rows: pl.DataFrame, models: list[str], shown: int = PREVIEW_ROWS) -> Table:
    """The day's first turns: the post answered, the agent's real reply and each model's answer (posts joined by
    " / ", "(no valid call)" when the answer is not a valid reply by evaluation's rule)."""
    answers = {
        (example_id, model): (list(posts or []), invalid)
        for example_id, model, posts, invalid in rows.filter(pl.col("sample") == 0)
        .select("example_id", "model", "posts", "invalid_calls")
        .iter_rows()
    }
    records = []
    for example_id, prompt, calls in turns.head(shown).select("example_id", "prompt", "calls").iter_rows():
        record = {"post_answered": cut(post_answered(prompt)), "real_reply": cut(" / ".join(calls))}
        for model in models:
            posts, invalid = answers.get((example_id, model), ([], 0))
            valid = valid_answer(posts, invalid)
            record[model] = cut(" / ".join(posts)) if valid else f"(no valid call) {cut(' / '.join(posts), 80)}"
        records.append({**record, "example_id": example_id})
    schema = {"post_answered": pl.String, "real_reply": pl.String, **{m: pl.String for m in models}}
    return Table(pl.DataFrame(records, schema={**schema, "example_id": pl.String}))


def shadow_metadata(
    turns: DayTurns,
    models: ShadowModels,
    run: GenerationRun,
    paths: ShadowDayPaths,
    server_started_s: float | None,
) -> dict[str, Any]:
    """What the day's materialization shows: counts first (charted across partitions), then the models, the left-out
    replies and a preview."""
    rows = run.rows
    answered = {m: rows.filter((pl.col("model") == m) & pl.col("error").is_null()).height for m in models.names}
    # a reply shadowed is a turn answered by every model; the server's start is not in it (server_start_s)
    per_100 = round(run.seconds * 100 * len(models.names) / run.generated, 1) if run.generated else None
    metadata: dict[str, Any] = {
        "day": turns.day,
        "replies": turns.replies,
        "turns": turns.turns.height,
        **{f"answered_{m}": n for m, n in answered.items()},
        "errors": rows.filter(pl.col("error").is_not_null()).height,
        "generated_now": run.generated,
        "kept_from_an_earlier_run": run.reused,
        "seconds": round(run.seconds, 1),
        "seconds_per_100_replies": per_100 if per_100 is not None else "nothing generated",
        "server_start_s": round(server_started_s, 1) if server_started_s is not None else "no server started",
        "models": models.described(),
        "bundle_version": models.bundle.version,
        "left_out": turns.skipped or "none",
        "folder": paths.root,
    }
    if not turns.turns.height:
        metadata["note"] = f"no agent replies to answer on {turns.day}"
    if turns.missing_context:
        shown = ", ".join(turns.missing_context[:10])
        metadata["missing_thread_context"] = f"{len(turns.missing_context)} replies ({MISSING_CONTEXT}): {shown}"
    if rows.height:
        metadata["preview"] = preview(turns.turns, rows, models.names)
    return metadata
