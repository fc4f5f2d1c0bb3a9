"""filtered_records (per collection), context_window and chat_dataset: thin wrappers over lib/ filters, context,
prompt and dataset."""

from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import polars as pl

from void_pipeline.defs.agent import recorded_agent
from void_pipeline.defs.automation import WHEN_INPUTS_CHANGE
from void_pipeline.defs.ingest.assets import COLLECTIONS, collection_partitions, raw_records, thread_context
from void_pipeline.defs.metadata import OWNERS, as_metadata, table_preview, table_schema
from void_pipeline.lib.curate.context import (
    STRATEGIES,
    SnapshotError,
    drift_report,
    load_context_source,
)
from void_pipeline.lib.curate.dataset import (
    InvalidDataset,
    TokenReport,
    build_examples,
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
from void_pipeline.lib.curate.metadata import context_metadata, dataset_metadata
from void_pipeline.lib.curate.prompt import DEFAULT_TEMPLATE, PromptTemplate
from void_pipeline.lib.curate.request import (
    DEFAULT_HANDLER,
    DEFAULT_REPLY_RESULT,
    ProfileError,
    RequestProfile,
    direct_profile,
)
from void_pipeline.lib.curate.runtime import build_context
from void_pipeline.lib.files import DiskFull, staged_dir, write_parquet_atomic, write_text_atomic
from void_pipeline.lib.handoffs import ContextWindowReport, HandoffError
from void_pipeline.lib.ingest.deletions import deleted_uris
from void_pipeline.lib.ingest.export import CorruptState, read_parquet_output
from void_pipeline.lib.ingest.records import POST
from void_pipeline.lib.layout import AgentLayout, CuratePaths, DatasetPaths
from void_pipeline.lib.model import ChosenModel
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
        built = build_context(
            snapshot, config.runtime, config.strategy, config.source, counter, budget, config.reply_result
        )
    except SnapshotError as err:
        raise dg.Failure(f"{no_room}, and {err}: raise VOID_SEQUENCE_LEN or lower reserve_tokens") from err
    except ProfileError as err:
        raise dg.Failure(f"context_window: {err}", allow_retries=False) from err
    layout = recorded_agent(storage)[1]
    try:
        built.write(layout.curate.context_window)
    except DiskFull as err:  # the message names the folder; retrying cannot free space
        raise dg.Failure(str(err), allow_retries=False) from err
    posts = layout.ingest.records(POST)
    drift = drift_report(read_input(posts, f"raw_records[{POST}]"), snapshot.snapshot_date) if posts.exists() else None
    profile = built.profiles[config.strategy]
    metadata = context_metadata(built.report, snapshot, built.windows, profile, drift, layout.curate.context_window)
    return dg.MaterializeResult(metadata=as_metadata(metadata))


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
    posts, reasoning, context_rows = dataset_inputs(layout, agent.did, config)
    gone = deleted_uris(layout.ingest)  # posts deleted upstream: no example shows or answers with them
    window, profile = context_request(layout.curate, config)
    template_path = config.template_path or window.prompt_template or str(DEFAULT_TEMPLATE)
    try:  # a template that cannot render every thread is the operator's to fix: no retry, no dataset
        template = PromptTemplate.from_file(template_path)
        handler_profile(config.handler_profile)  # an unknown name fails here, naming the known ones
        examples, turns = build_examples(
            posts, context_rows, template, agent.did, agent.handle, reasoning, handler=config.handler_profile, gone=gone
        )
    except ValueError as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    examples = split_by_thread(examples, config.test_threads, config.val_share, config.test_share_max)
    chosen = model.chosen()
    kept, tokens = fitting_examples(context, examples, window, chosen, profile)
    out = layout.curate.chat_dataset(config.format)
    manifest = {
        **dataset_manifest(window.selected, window.tokens[window.selected], tokens),
        **chosen.identity(),  # training refuses a dataset built for another model or sequence_len
    }
    # Written beside the current dataset and put in its place only when complete and valid: a failure here
    # (or a kill) leaves the previous dataset whole.
    try:
        with staged_dir(out) as staging:
            written = write_dataset(staging, kept, config.format, profile, manifest)
            # serving renders live threads with the same template (the serving bundle copies it)
            write_text_atomic(DatasetPaths(staging).prompt_template(template.syntax), template.source)
        layout.curate.write_latest_dataset(config.format)  # what training reads: the dataset built last
    except InvalidDataset as err:
        raise dg.Failure(str(err)) from err
    except DiskFull as err:  # the message names the folder; retrying cannot free space
        raise dg.Failure(str(err), allow_retries=False) from err
    return dg.MaterializeResult(
        # the same dataset twice is the same version: the UI shows what downstream is stale against
        data_version=dg.DataVersion(dataset_hash(out)),
        metadata=as_metadata(dataset_metadata(written, kept, turns, tokens, config.format, out)),
    )


def dataset_inputs(
    layout: AgentLayout, did: str, config: ChatDatasetConfig
) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame]:
    """The agent's filtered posts (from min_date on), its reasoning when asked for, and the thread context."""
    curate = layout.curate
    posts_path = curate.filtered_records(POST)
    if not posts_path.exists():
        raise dg.Failure(f"filtered_records[{POST}] is missing: materialize it first")
    posts = read_input(posts_path, f"filtered_records[{POST}]").filter(pl.col("did") == did)
    if config.min_date:
        posts = posts.filter(pl.col("created_at").dt.date() >= date.fromisoformat(config.min_date))
    reasoning = None
    if config.include_reasoning and curate.filtered_records(REASONING).exists():
        reasoning = read_input(curate.filtered_records(REASONING), f"filtered_records[{REASONING}]")
    return posts, reasoning, read_input(layout.ingest.thread_context, "thread_context")


def context_request(curate: CuratePaths, config: ChatDatasetConfig) -> tuple[ContextWindowReport, RequestProfile]:
    """context_window's report and the request profile of its selected variant, rendering threads as the handler
    profile asks (a context window made before request profiles: the direct one)."""
    try:
        window = ContextWindowReport.read(curate.context_report)
    except HandoffError as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    if window is None:
        raise dg.Failure(f"no context window in {curate.context_window}: materialize context_window first")
    saved = curate.context_request(window.selected)
    profile = (
        RequestProfile.read(saved)
        if saved.exists()
        else direct_profile(curate.context_variant(window.selected).read_text())
    )
    if profile.runtime == "letta" and config.format != "openai":
        raise dg.Failure(
            f"the letta runtime needs the openai format (Letta's request has tool turns), not {config.format}: "
            "set format: openai, or context_window's runtime: direct",
            allow_retries=False,
        )
    return window, replace(profile, handler=config.handler_profile)  # serving renders threads the same way


def fitting_examples(
    context: dg.AssetExecutionContext,
    examples: pl.DataFrame,
    window: ContextWindowReport,
    chosen: ChosenModel,
    profile: RequestProfile,
) -> tuple[pl.DataFrame, TokenReport]:
    """The examples that fit sequence_len with the selected system prompt, and their token report; a Failure when
    none does (the previous dataset is kept)."""
    counter = chosen.token_counter()
    if not counter.exact:
        context.log.warning(f"token counts are estimates: {counter.source}")
    strategy = window.selected
    system_tokens: dict[str, int] = {name: int(window.tokens[name]) for name in STRATEGIES}
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
    return kept, tokens


def dataset_manifest(strategy: str, system_tokens: int, tokens: TokenReport) -> dict[str, Any]:
    return {
        "system_prompt": "system_prompt.txt",
        "context_strategy": strategy,
        "system_tokens": system_tokens,
        "tokens": tokens.per_split,
        "exact_tokens": tokens.exact,
        "tokenizer": tokens.source,
    }
