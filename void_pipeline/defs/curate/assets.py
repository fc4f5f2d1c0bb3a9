"""filtered_records (per collection), context_window and chat_dataset: thin wrappers over lib/ filters, context,
prompt and dataset."""

import json
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import polars as pl

from void_pipeline.defs.agent import recorded_agent
from void_pipeline.defs.automation import WHEN_INPUTS_CHANGE
from void_pipeline.defs.ingest.assets import COLLECTIONS, collection_partitions, raw_records, thread_context
from void_pipeline.defs.metadata import OWNERS, table_preview, table_schema
from void_pipeline.lib.curate.context import (
    STRATEGIES,
    SnapshotError,
    context_windows,
    drift_report,
    load_context_source,
)
from void_pipeline.lib.curate.dataset import (
    InvalidDataset,
    TokenReport,
    build_examples,
    leaked_roots,
    split_by_thread,
    token_report,
    write_dataset,
)
from void_pipeline.lib.curate.filters import (
    FilterOptions,
    LoopDetector,
    filter_records,
    filter_report,
    orphan_replies,
    read_filter_counts,
    rules_for,
)
from void_pipeline.lib.curate.handler import handler_profile
from void_pipeline.lib.curate.prompt import DEFAULT_TEMPLATE, TOOL_DESCRIPTION, PromptTemplate
from void_pipeline.lib.curate.request import (
    DEFAULT_HANDLER,
    DEFAULT_REPLY_RESULT,
    ProfileError,
    RequestProfile,
    direct_profile,
)
from void_pipeline.lib.curate.runtime import renderer_for, window_profile
from void_pipeline.lib.files import DiskFull, staged_dir, write_parquet_atomic, write_text_atomic
from void_pipeline.lib.ingest.export import CorruptState, read_parquet_output
from void_pipeline.lib.ingest.records import POST
from void_pipeline.lib.layout import ContextWindowPaths, DatasetPaths
from void_pipeline.lib.report import counts_table, markdown_table
from void_pipeline.lib.train.training import dataset_hash
from void_pipeline.resources.model import ModelChoice
from void_pipeline.resources.storage import PipelineStorage

DEMO_SNAPSHOT = Path(__file__).resolve().parents[2] / "context_snapshots" / "demo"
DEMO_AGENT_FILE = Path(__file__).resolve().parents[2] / "agents" / "void-demo.af"  # testworld/agent_file.py
REASONING = "stream.thought.reasoning"


class FilterConfig(dg.Config):
    min_chars: int | None = None
    """Records shorter than this (after normalisation) are dropped as too short; unset: the collection's own floor
    (posts 20, reasoning 40, memory 20; tool calls and other collections have no length rule)."""
    loop_min_keywords: int = 2
    """Character-sheet loop: how many loop keywords make a record loop content."""
    loop_stat_blocks: bool = True
    """Also catch stat blocks (STR/DEX/CON... with numbers, AC n + HP n)."""
    orphan_replies: Literal["keep", "drop"] = "keep"
    """Replies whose ancestors are all unavailable: keep them (marked `orphan`) or drop them."""


def read_input(path: Path, producer: str) -> pl.DataFrame:
    """An upstream asset's Parquet output; an unreadable one fails naming the file and what rebuilds it."""
    try:
        return read_parquet_output(path, f"materialize {producer} again to rebuild it")
    except CorruptState as err:
        raise dg.Failure(str(err), allow_retries=False) from err


@dg.asset(
    partitions_def=collection_partitions,
    deps=[raw_records, thread_context],
    group_name="curate",
    owners=OWNERS,
    kinds={"polars", "parquet"},
    description="Records worth learning from: normalised, without loop content, duplicates or too-short text.",
    automation_condition=WHEN_INPUTS_CHANGE,
)
def filtered_records(
    context: dg.AssetExecutionContext, config: FilterConfig, storage: PipelineStorage
) -> dg.MaterializeResult:
    collection = context.partition_key
    layout = recorded_agent(storage)[1]
    source = layout.ingest.records(collection)
    if not source.exists():
        raise dg.Failure(f"raw_records[{collection}] is missing ({source}): materialize it first")
    frame = read_input(source, f"raw_records[{collection}] with full_refresh: true")
    rules = rules_for(collection)
    orphans = orphan_replies(read_input(layout.ingest.thread_context, "thread_context")) if rules.orphans else set()
    options = FilterOptions(
        min_chars=config.min_chars,
        loop=LoopDetector(min_keywords=config.loop_min_keywords, stat_blocks=config.loop_stat_blocks),
        orphan_replies=config.orphan_replies,
    )
    result = filter_records(frame, rules, options, orphans)
    write_parquet_atomic(result.kept, layout.curate.filtered_records(collection))
    write_parquet_atomic(result.rejected, layout.curate.filtered_rejected(collection))
    context.log.info(result.summary(collection))
    outputs = {c: (layout.curate.filtered_records(c), layout.curate.filtered_rejected(c)) for c in COLLECTIONS}
    report = filter_report(collection, result, read_filter_counts(outputs))
    shown = ["created_at", "text", "tool_args" if rules.calls else "orphan", "uri"]
    return dg.MaterializeResult(
        metadata={
            **{k: dg.MetadataValue.md(v) if isinstance(v, str) else v for k, v in report.items()},
            "dagster/row_count": result.kept.height,
            "dagster/column_schema": table_schema(result.kept),
            "path": dg.MetadataValue.path(str(layout.curate.filtered_records(collection))),
            "preview": table_preview(result.kept, shown),
        }
    )


class ContextWindowConfig(dg.Config):
    source: str = str(DEMO_AGENT_FILE)
    """The agent's context: a Letta agent file (.af, exported from Letta) or a snapshot folder (system prompt and one
    file per memory block, as the export tool writes them, with an optional manifest.json)."""
    runtime: Literal["letta", "direct"] = "letta"
    """Who sends the model its requests: letta (the request the Letta server compiles for the agent: its system
    message, tools, tool results and loop) or direct (our own conversation, for clients that call the endpoint
    without Letta)."""
    strategy: Literal["full", "trimmed", "distilled"] = "trimmed"
    """The system prompt chat_dataset uses: all of it, fitted to a token budget, or a persona stub."""
    reserve_tokens: int = 2048
    """Tokens kept free for the thread prompt and the answer; the trimmed budget is sequence_len minus this."""
    reply_result: str = DEFAULT_REPLY_RESULT
    """letta: what the agent's reply tool returns after posting ({number}, {chars}, {text}); the demo agent's tool
    returns this text. Set it to what your tool returns (Letta sends it back to the model)."""


@dg.asset(
    deps=[raw_records],
    group_name="curate",
    owners=OWNERS,
    kinds={"text"},
    description="The agent's system prompt and memory blocks, as full, trimmed-to-budget and distilled variants.",
    automation_condition=WHEN_INPUTS_CHANGE,
)
def context_window(
    context: dg.AssetExecutionContext,
    config: ContextWindowConfig,
    storage: PipelineStorage,
    model: ModelChoice,
) -> dg.MaterializeResult:
    try:
        snapshot = load_context_source(Path(config.source))
    except SnapshotError as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    for warning in snapshot.warnings:
        context.log.warning(f"context source {config.source}: {warning}")
    chosen = model.chosen()
    counter = chosen.token_counter()
    if not counter.exact:
        context.log.warning(f"token counts are estimates: {counter.source}")
    budget = chosen.sequence_len - config.reserve_tokens
    no_room = (
        f"sequence_len {chosen.sequence_len} minus context_window's reserve_tokens {config.reserve_tokens} "
        f"(kept for the thread prompt and the answer) leaves {budget} tokens for the system prompt"
    )
    if budget < 1:
        raise dg.Failure(f"{no_room}: raise VOID_SEQUENCE_LEN or lower reserve_tokens")
    try:
        renderer = renderer_for(config.runtime, snapshot)
        windows = context_windows(snapshot, counter, budget, TOOL_DESCRIPTION, renderer)
        profiles = {n: window_profile(config.runtime, snapshot, w, config.reply_result) for n, w in windows.items()}
    except SnapshotError as err:
        raise dg.Failure(f"{no_room}, and {err}: raise VOID_SEQUENCE_LEN or lower reserve_tokens") from err
    except ProfileError as err:
        raise dg.Failure(f"context_window: {err}", allow_retries=False) from err
    layout = recorded_agent(storage)[1]
    out = layout.curate.context_window
    report = {
        "selected": config.strategy,
        "runtime": config.runtime,
        "source": config.source,
        "agent_type": snapshot.agent.agent_type if snapshot.agent else None,
        "prompt_template": str(snapshot.prompt_template) if snapshot.prompt_template else None,
        "snapshot_date": snapshot.snapshot_date.isoformat(),
        "tokens": {name: w.tokens for name, w in windows.items()},
        "budget_tokens": budget,
        "exact_tokens": counter.exact,
        "tokenizer": counter.source,
    }
    try:
        with staged_dir(out) as staging:  # the variants, their request profiles and the report change together
            for name, window in windows.items():
                write_text_atomic(ContextWindowPaths(staging).variant(name), window.text)
                profiles[name].write(ContextWindowPaths(staging).request(name))
            write_text_atomic(ContextWindowPaths(staging).report, json.dumps(report, indent=2))
    except DiskFull as err:  # the message names the folder; retrying cannot free space
        raise dg.Failure(str(err), allow_retries=False) from err
    blocks = pl.DataFrame([b.__dict__ for b in windows["trimmed"].blocks])
    posts = layout.ingest.records(POST)
    drift = drift_report(read_input(posts, f"raw_records[{POST}]"), snapshot.snapshot_date) if posts.exists() else None
    return dg.MaterializeResult(
        metadata={
            "selected_strategy": config.strategy,
            **{f"tokens_{name}": w.tokens for name, w in windows.items()},
            "trimmed_budget_tokens": budget,
            "exact_token_counts": counter.exact,
            "tokenizer": counter.source,
            "blocks_trimmed": dg.MetadataValue.md(markdown_table(blocks, rows=len(blocks))),
            "runtime": config.runtime,
            "agent_type": snapshot.agent.agent_type if snapshot.agent else "(snapshot folder)",
            "tools_offered": ", ".join(profiles[config.strategy].tool_names()),
            "system_message": dg.MetadataValue.md(
                f"```\n{windows[config.strategy].text[:1500]}\n```"
                + (
                    "\n\n_(cut here for the UI; the whole text is in the variant file)_"
                    if len(windows[config.strategy].text) > 1500
                    else ""
                )
            ),
            "snapshot_date": snapshot.snapshot_date.isoformat(),
            "snapshot_warnings": dg.MetadataValue.md(
                "\n".join(f"- {w}" for w in snapshot.warnings) if snapshot.warnings else "_none_"
            ),
            "records_older_than_snapshot": dg.MetadataValue.md(drift or "_no posts exported yet_"),
            "path": dg.MetadataValue.path(str(out)),
        }
    )


class ChatDatasetConfig(dg.Config):
    format: Literal["openai", "sharegpt", "alpaca"] = "openai"
    """openai: messages + tools (axolotl `chat_template`); sharegpt; alpaca."""
    template_path: str | None = None
    """The mention prompt template: a Python format string as in the handler ({author_handle}) or Jinja2; point it
    at the operator's own handler template for byte parity. Default: the context source's prompt-template.txt when
    it has one, else ours (void_pipeline/prompts/mention.txt)."""
    test_threads: int = 500
    """Replies of this many most recent threads form the test set."""
    val_share: float = 0.02
    """Share of the remaining threads (the most recent ones) kept for validation."""
    test_share_max: float = 0.2
    """The test set never takes more than this share of the threads (small corpora keep most for training)."""
    include_reasoning: bool = False
    """Attach the agent's stream.thought.reasoning written just before a reply as the assistant's text."""
    min_date: str | None = None
    """Keep only replies on or after this date (YYYY-MM-DD): limits drift from the context snapshot."""
    handler_profile: str = DEFAULT_HANDLER
    """How the user message shows the thread: example-social-agent@e7a2a05 (the handler void runs), umbra@cae8c07
    (the newer layout: a tree view, then the posts' data) or umbra@cae8c07/yaml (that layout's data alone)."""


@dg.asset(
    deps=[filtered_records, thread_context, context_window],
    group_name="curate",
    owners=OWNERS,
    kinds={"jsonl"},
    description="Train/val/test chat datasets: the handler's mention prompt in, add_post tool calls out.",
    automation_condition=WHEN_INPUTS_CHANGE,
)
def chat_dataset(
    context: dg.AssetExecutionContext,
    config: ChatDatasetConfig,
    storage: PipelineStorage,
    model: ModelChoice,
) -> dg.MaterializeResult:
    agent, layout = recorded_agent(storage)
    curate = layout.curate
    posts_path = curate.filtered_records(POST)
    if not posts_path.exists():
        raise dg.Failure(f"filtered_records[{POST}] is missing: materialize it first")
    posts = read_input(posts_path, f"filtered_records[{POST}]").filter(pl.col("did") == agent.did)
    if config.min_date:
        posts = posts.filter(pl.col("created_at").dt.date() >= date.fromisoformat(config.min_date))
    reasoning = None
    if config.include_reasoning and curate.filtered_records(REASONING).exists():
        reasoning = read_input(curate.filtered_records(REASONING), f"filtered_records[{REASONING}]")
    context_rows = read_input(layout.ingest.thread_context, "thread_context")
    window = json.loads(curate.context_report.read_text())
    strategy = window["selected"]
    saved = curate.context_request(strategy)  # a context window made before request profiles: direct
    profile = (
        RequestProfile.read(saved) if saved.exists() else direct_profile(curate.context_variant(strategy).read_text())
    )
    profile = replace(profile, handler=config.handler_profile)  # serving renders threads the same way
    if profile.runtime == "letta" and config.format != "openai":
        raise dg.Failure(
            f"the letta runtime needs the openai format (Letta's request has tool turns), not {config.format}: "
            "set format: openai, or context_window's runtime: direct",
            allow_retries=False,
        )
    template_path = config.template_path or window.get("prompt_template") or str(DEFAULT_TEMPLATE)
    try:  # a template that cannot render every thread is the operator's to fix: no retry, no dataset
        template = PromptTemplate.from_file(template_path)
        handler_profile(config.handler_profile)  # an unknown name fails here, naming the known ones
        examples, turns = build_examples(
            posts, context_rows, template, agent.did, agent.handle, reasoning, handler=config.handler_profile
        )
    except ValueError as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    examples = split_by_thread(examples, config.test_threads, config.val_share, config.test_share_max)

    chosen = model.chosen()
    counter = chosen.token_counter()
    if not counter.exact:
        context.log.warning(f"token counts are estimates: {counter.source}")
    system_tokens: dict[str, int] = {name: int(window["tokens"][name]) for name in STRATEGIES}
    kept, tokens = token_report(examples, system_tokens, strategy, chosen.sequence_len, counter, profile)
    if examples.height and not kept.height:
        raise dg.Failure(
            f"every example ({examples.height:,}) is longer than sequence_len {chosen.sequence_len}: the shortest "
            f"is {tokens.shortest:,} tokens with the {strategy!r} system prompt ({system_tokens[strategy]:,} tokens). "
            "Raise VOID_SEQUENCE_LEN or choose a shorter context_window strategy (distilled); "
            "the previous dataset is kept as it was"
        )
    if tokens.over_length:
        context.log.warning(f"{tokens.over_length} examples exceed sequence_len {chosen.sequence_len}: dropped")

    out = curate.chat_dataset(config.format)
    manifest = {
        **dataset_manifest(strategy, system_tokens[strategy], tokens),
        **chosen.identity(),  # training refuses a dataset built for another model or sequence_len
    }
    # Written beside the current dataset and put in its place only when complete and valid: a failure here
    # (or a kill) leaves the previous dataset whole.
    try:
        with staged_dir(out) as staging:
            written = write_dataset(staging, kept, config.format, profile, manifest)
            # serving renders live threads with the same template (the serving bundle copies it)
            write_text_atomic(DatasetPaths(staging).prompt_template(template.syntax), template.source)
        curate.write_latest_dataset(config.format)  # what training reads: the dataset built last
    except InvalidDataset as err:
        raise dg.Failure(str(err)) from err
    except DiskFull as err:  # the message names the folder; retrying cannot free space
        raise dg.Failure(str(err), allow_retries=False) from err
    sizes = written.sizes
    examples_total = sum(n for n, _ in sizes.values())
    bytes_total = sum(b for _, b in sizes.values())
    sample = kept.filter(pl.col("split") == "train").head(1).to_dicts()
    tokens_md = markdown_table(pl.DataFrame([{"split": s, **v} for s, v in tokens.per_split.items()]))
    epoch_md = counts_table(tokens.epoch_tokens_by_strategy, key="context strategy", value="training tokens / epoch")
    return dg.MaterializeResult(
        # the same dataset twice is the same version: the UI shows what downstream is stale against
        data_version=dg.DataVersion(dataset_hash(out)),
        metadata={
            "dagster/row_count": examples_total,
            **{f"{split}_examples": n for split, (n, _) in sizes.items()},
            "turns": turns.turns,
            "posts_in_turns": turns.posts_in_turns,
            "skipped": dg.MetadataValue.md(counts_table(dict(turns.skipped))),
            "over_sequence_len_dropped": tokens.over_length,
            "bytes_per_example": round(bytes_total / max(examples_total, 1)),
            "dataset_bytes": bytes_total,
            "copy_prompt_layout_bytes": written.copy_prompt_bytes,
            "tokens_per_split": dg.MetadataValue.md(tokens_md),
            "training_tokens_per_epoch": dg.MetadataValue.md(epoch_md),
            "exact_token_counts": tokens.exact,
            "leaked_thread_roots": len(leaked_roots(kept)),
            "format": config.format,
            "path": dg.MetadataValue.path(str(out)),
            "sample": dg.MetadataValue.md(
                f"**user**\n\n```\n{sample[0]['prompt']}\n```\n\n**assistant tool calls**\n\n```json\n"
                + json.dumps([{"text": c} for c in sample[0]["calls"]], indent=2, ensure_ascii=False)
                + "\n```"
                if sample
                else "_no examples_"
            ),
        },
    )


def dataset_manifest(strategy: str, system_tokens: int, tokens: TokenReport) -> dict[str, Any]:
    return {
        "system_prompt": "system_prompt.txt",
        "context_strategy": strategy,
        "system_tokens": system_tokens,
        "tokens": tokens.per_split,
        "exact_tokens": tokens.exact,
        "tokenizer": tokens.source,
    }
