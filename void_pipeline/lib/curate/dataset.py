"""Chat datasets in the exact prompt the handler sends, with the agent's replies as tool calls.

A *turn* is one answer of the agent: a reply to someone else's post, followed by the agent's own consecutive
replies to itself in that thread; it becomes one assistant message with one ``add_post_to_bluesky_reply_thread``
call per post, in order. The user message is the rendered mention prompt (lib/curate/prompt.py) for the thread up to
the post being answered. The system prompt (the context window) is stored once per dataset, not per row.

Forgetting: a turn whose posts, shown thread posts or shown quoted posts are gone upstream (in the deletions ledger,
or unavailable in thread context for one of the ledger's reasons) is dropped as ``deleted_upstream``. Every example
keeps the URIs it was made from (``source_uris``), so an adapter can tell later which of its examples were deleted.

Split by thread root, time-ordered: the replies of the ``test_threads`` most recent threads are the test set,
the next ~``val_share`` of threads validation, the rest training; no root is ever in two splits.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import polars as pl

from void_pipeline.lib.bulk import gc_paused
from void_pipeline.lib.curate.handler import ThreadPost, post_item, quoted_posts, visible_thread
from void_pipeline.lib.curate.prompt import PromptTemplate, render_mention
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL_NAME, reply_call_errors
from void_pipeline.lib.curate.request import DIRECT_PROFILE, RequestProfile
from void_pipeline.lib.files import write_bytes_atomic, write_parquet_atomic, write_text_atomic
from void_pipeline.lib.ingest.deletions import REASONS
from void_pipeline.lib.ingest.embed_views import Resolver, embed_view
from void_pipeline.lib.layout import DatasetPaths
from void_pipeline.lib.model import TokenCounter

Format = Literal["openai", "sharegpt", "alpaca"]
FORMATS: tuple[Format, ...] = ("openai", "sharegpt", "alpaca")
SPLITS = ("train", "val", "test")

EXAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "example_id": pl.String(),
    "root_uri": pl.String(),
    "first_uri": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "prompt": pl.String(),
    "calls": pl.List(pl.String()),
    "reasoning": pl.String(),
    # the posts the example shows or answers with: the thread as the prompt shows it (root first), the posts those
    # quote, then the agent's posts of the turn
    "source_uris": pl.List(pl.String()),
}
LIST_COLUMNS = ("calls", "source_uris")
DELETED_UPSTREAM = "deleted_upstream"  # the skip reason of examples whose sources are gone


@dataclass
class TurnStats:
    turns: int = 0
    posts_in_turns: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    deleted: list[tuple[str, str, str]] = field(default_factory=list)  # (example, gone post, reason): the first few

    def drop_deleted(self, example: str, gone_uri: str, reason: str) -> None:
        self.skipped[DELETED_UPSTREAM] += 1
        if len(self.deleted) < DELETED_SHOWN:
            self.deleted.append((example, gone_uri, reason))


DELETED_SHOWN = 20


@gc_paused()
def build_examples(
    posts: pl.DataFrame,
    context: pl.DataFrame,
    template: PromptTemplate,
    agent_did: str,
    agent_handle: str | None,
    reasoning: pl.DataFrame | None = None,
    reasoning_window_s: float = 120.0,
    handler: str | None = None,
    gone: Mapping[str, str] | None = None,
) -> tuple[pl.DataFrame, TurnStats]:
    """One row per turn (EXAMPLE_SCHEMA). ``posts``: the agent's kept posts (filtered, with ``text_norm``);
    ``context``: thread_context rows; ``reasoning``: kept ``stream.thought.reasoning`` rows to attach (optional);
    ``handler``: the handler profile that shows the thread (lib/curate/handler.py; None: the default); ``gone``:
    the deletions ledger (uri → reason; lib/ingest/deletions.py ``deleted_uris``).
    """
    stats = TurnStats()
    rows = (
        posts.sort("created_at", "uri")
        .select("uri", "text_norm", "created_at", "reply_parent_uri", "reply_root_uri")
        .to_dicts()
    )
    by_uri = {r["uri"]: r for r in rows}
    children: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        parent = row["reply_parent_uri"]
        if parent is not None and parent in by_uri:
            children.setdefault(parent, []).append(row)
    chains, posts_by_uri = _threads(context)
    quoted = quoted_posts(posts_by_uri)  # a quote of a post thread context holds shows it, as the AppView does
    # each post written once for all threads
    items = {uri: post_item(post, quoted, handler) for uri, post in posts_by_uri.items()}
    thoughts = _reasoning_index(reasoning)
    gone = {
        **(gone or {}),
        **{p.uri: p.reason for p in posts_by_uri.values() if not p.available and p.reason in REASONS},
    }
    embedded: dict[str, list[str]] = {}  # each post's shown quotes, found once for all threads
    examples = []
    for row in rows:
        parent = row["reply_parent_uri"]
        if parent is None:
            stats.skipped["not_a_reply"] += 1
            continue
        if parent.startswith(f"at://{agent_did}/"):
            if parent in gone and parent not in by_uri:
                stats.drop_deleted(row["uri"], parent, str(gone[parent]))  # the turn's earlier post was deleted
            elif parent not in by_uri:
                stats.skipped["chain_head_filtered"] += 1  # continues a turn whose first post was filtered out
            continue  # otherwise part of the turn started by an earlier post
        chain = [row]
        while chain[-1]["uri"] in children:
            chain.append(children[chain[-1]["uri"]][0])  # the agent's first continuation, by time
        thread = [posts_by_uri[uri] for uri in chains.get(row["uri"], [])]
        # what the prompt would show had nothing been deleted: a deleted post does not hide the posts above it
        shown = visible_thread([p._replace(available=True) if p.uri in gone else p for p in thread])
        sources = _source_uris([c["uri"] for c in chain], shown, posts_by_uri, quoted, embedded)
        hit = next((uri for uri in (parent, *sources) if uri in gone), None)
        if hit is not None:
            stats.drop_deleted(row["uri"], hit, str(gone[hit]))
            continue
        if not thread or thread[-1].uri != parent or not thread[-1].available:
            stats.skipped["parent_unavailable"] += 1
            continue
        calls = [c["text_norm"] for c in chain]
        if any(reply_call_errors({"text": text}) for text in calls):
            stats.skipped["invalid_call"] += 1
            continue
        examples.append(
            {
                "example_id": row["uri"],
                "root_uri": row["reply_root_uri"] or parent,
                "first_uri": row["uri"],
                "created_at": row["created_at"],
                "prompt": render_mention(thread, template, items, handler, quoted),
                "calls": calls,
                "reasoning": _reasoning_before(thoughts, row["created_at"], reasoning_window_s),
                "source_uris": sources,
            }
        )
        stats.turns += 1
        stats.posts_in_turns += len(chain)
    threads = {e["root_uri"] for e in examples}
    if len(threads) > 1 and len({e["prompt"] for e in examples}) == 1:
        raise ValueError(
            f"prompt template {template.name} renders the same prompt for all {len(examples)} examples of "
            f"{len(threads)} threads: it must show each thread (mention_text, thread_context)"
        )
    columns: dict[str, Any] = {name: [e[name] for e in examples] for name in EXAMPLE_SCHEMA if name not in LIST_COLUMNS}
    frame = pl.DataFrame(columns, schema={k: v for k, v in EXAMPLE_SCHEMA.items() if k not in LIST_COLUMNS})
    lists = [_list_column(name, [e[name] for e in examples]) for name in LIST_COLUMNS]
    return frame.with_columns(lists).select(list(EXAMPLE_SCHEMA)), stats


def _list_column(name: str, values: list[list[str]]) -> pl.Series:
    """A list column built from a flat column (polars converts nested Python lists one row at a time); every row
    holds at least one item."""
    if not values:
        return pl.Series(name, [], dtype=pl.List(pl.String))
    flat = pl.DataFrame(
        {"row": [i for i, items in enumerate(values) for _ in items], name: [v for items in values for v in items]},
        schema={"row": pl.Int64, name: pl.String},
    )
    return flat.group_by("row", maintain_order=True).agg(name)[name]


def _source_uris(
    turn: list[str],
    shown: list[ThreadPost],
    posts: Mapping[str, ThreadPost],
    quoted: Resolver,
    embedded: dict[str, list[str]],
) -> list[str]:
    """The example's sources, each once: the shown thread (root first), the posts they quote as the prompt shows
    them, then the turn's own posts."""
    found = [p.uri for p in shown]
    for post in shown:
        if post.uri not in embedded:
            embedded[post.uri] = list(_shown_quotes(post, quoted)) if post.available else []
        found += embedded[post.uri]
    return list(dict.fromkeys(found + turn))


def _shown_quotes(post: ThreadPost, quoted: Resolver) -> Iterator[str]:
    """URIs of the posts whose content ``post``'s embed view shows (``#viewRecord``, nested quotes included)."""
    if post.embed_json:
        view: Any = json.loads(post.embed_json)
    elif post.record_json and '"embed"' in post.record_json:
        view = embed_view(json.loads(post.record_json).get("embed"), post.author_did or "", quoted)
    else:
        return
    stack = [view]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("$type") == "app.bsky.embed.record#viewRecord" and isinstance(node.get("uri"), str):
                yield node["uri"]
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))


# ThreadPost's fields, in order, as thread context's ancestor struct names them.
ANCESTOR_FIELDS = (
    "uri",
    "author_handle",
    "author_did",
    "text",
    "created_at",
    "available",
    "reason",
    "author_display_name",
    "cid",
    "record_json",
    "embed_json",
)


def _threads(context: pl.DataFrame) -> tuple[dict[str, list[str]], dict[str, ThreadPost]]:
    """Each reply's ancestor URIs (root first), and one ThreadPost per distinct ancestor. Threads repeat across
    turns, so the posts are read from columns once each, not as a Python dict per ancestor of every row."""
    uris = context["ancestors"].list.eval(pl.element().struct.field("uri")).to_list()
    chains = dict(zip(context["uri"].to_list(), uris, strict=True))
    flat = (
        context.select(pl.col("ancestors").explode())
        .unnest("ancestors")
        .filter(pl.col("uri").is_not_null())
        .unique("uri", keep="first", maintain_order=True)
    )
    columns = [flat[name].to_list() if name in flat.columns else [None] * flat.height for name in ANCESTOR_FIELDS]
    posts = {}
    for uri, handle, did, text, created_at, available, reason, name, cid, record, embed in zip(*columns, strict=True):
        posts[uri] = ThreadPost(uri, handle, did, text, created_at, bool(available), reason, name, cid, record, embed)
    return chains, posts


def _reasoning_index(reasoning: pl.DataFrame | None) -> list[tuple[datetime, str]]:
    if reasoning is None or reasoning.height == 0:
        return []
    return sorted(zip(reasoning["created_at"].to_list(), reasoning["text_norm"].to_list(), strict=True))


def _reasoning_before(thoughts: list[tuple[datetime, str]], when: datetime, window_s: float) -> str | None:
    """The latest reasoning record written within ``window_s`` before ``when``."""
    if not thoughts:
        return None
    import bisect

    index = bisect.bisect_left(thoughts, (when, "")) - 1
    if index >= 0 and (when - thoughts[index][0]).total_seconds() <= window_s:
        return thoughts[index][1]
    return None


# --- formats ----------------------------------------------------------------------------------------------


def tool_calls(calls: list[str], profile: RequestProfile = DIRECT_PROFILE, thinking: str = "") -> list[dict[str, Any]]:
    """The reply tool's calls, with ids of 9 letters and digits (Mistral's templates refuse any other id); the
    arguments as the profile's runtime carries them (memgpt types: ``thinking`` on the first, heartbeats)."""
    return [
        {
            "id": f"call{i:05d}",
            "type": "function",
            "function": {
                "name": REPLY_TOOL_NAME,
                "arguments": profile.reply_arguments(text, last=i == len(calls) - 1, thinking="" if i else thinking),
            },
        }
        for i, text in enumerate(calls)
    ]


def answer_messages(
    calls: list[str],
    reasoning: str | None,
    profile: RequestProfile = DIRECT_PROFILE,
    when: datetime | None = None,
) -> list[dict[str, Any]]:
    """The answer as the runtime's agent loop runs it: one reply call per assistant turn, the tool's result after
    each (as the profile's runtime writes it, at ``when``), then — unless the runtime ends the turn on the last call
    — an assistant turn without a call. (Stock Llama 3.x templates refuse several calls in one turn; this shape
    renders under every family's own template and parser.) The reasoning, when kept, is the first turn's content
    (memgpt types: the first call's ``thinking``)."""
    thinking = (reasoning or "") if profile.memgpt else ""
    messages: list[dict[str, Any]] = []
    for i, call in enumerate(tool_calls(calls, profile, thinking)):
        content = (reasoning or "") if i == 0 and not profile.memgpt else ""
        messages.append({"role": "assistant", "content": content, "tool_calls": [call]})
        result = profile.tool_result(i, calls[i], when)
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    if profile.closing_turn():
        messages.append({"role": "assistant", "content": ""})
    return messages


def format_row(
    example: dict[str, Any], fmt: Format, system: str | None = None, profile: RequestProfile = DIRECT_PROFILE
) -> dict[str, Any]:
    """One dataset row. ``system`` is inlined only when given (the copy-into-every-row layout, for comparison); a
    ``letta`` profile's rows always carry their system message (Letta compiles it per request: it holds the time).
    ``openai`` holds the agent loop's turns (answer_messages); ``sharegpt`` and ``alpaca`` have no tool turns, so
    their answer is the list of calls as JSON in one message (``direct`` only)."""
    when = example.get("created_at")
    if profile.runtime == "letta":
        system = profile.system_message(when)
    if fmt == "openai":
        messages: list[dict[str, Any]] = [] if system is None else [{"role": "system", "content": system}]
        messages.append({"role": "user", "content": example["prompt"]})
        messages += answer_messages(example["calls"], example.get("reasoning"), profile, when)
        return {"messages": messages, "tools": list(profile.offered_tools())}
    answer = json.dumps([c["function"] for c in tool_calls(example["calls"])], ensure_ascii=False)
    if fmt == "sharegpt":
        turns = [] if system is None else [{"from": "system", "value": system}]
        return {
            "conversations": [*turns, {"from": "human", "value": example["prompt"]}, {"from": "gpt", "value": answer}]
        }
    return {"instruction": example["prompt"], "input": "", "output": answer, **({"system": system} if system else {})}


def encode_rows(examples: pl.DataFrame, fmt: Format, profile: RequestProfile = DIRECT_PROFILE) -> bytes:
    """JSON lines for ``examples`` (EXAMPLE_SCHEMA rows), read column by column: only the columns a row holds
    become Python objects (orjson: rows are kilobytes each and there are tens of thousands)."""
    if examples.height == 0:
        return b""
    names = ("prompt", "calls", "reasoning", "created_at")
    columns = (examples[name].to_list() for name in names)
    rows = (
        format_row(dict(zip(names, values, strict=True)), fmt, profile=profile) for values in zip(*columns, strict=True)
    )
    return b"\n".join(orjson.dumps(row) for row in rows) + b"\n"


def assistant_text(example: dict[str, Any], profile: RequestProfile = DIRECT_PROFILE) -> str:
    """Everything after the prompt, as text (for token counts): the calls, the tool's results, the reasoning."""
    calls, when = example["calls"], example.get("created_at")
    results = "".join(profile.tool_result(i, text, when) for i, text in enumerate(calls))
    arguments = [c["function"] for c in tool_calls(calls, profile)]
    return (example.get("reasoning") or "") + json.dumps(arguments) + results


# --- split ------------------------------------------------------------------------------------------------


def split_by_thread(
    examples: pl.DataFrame, test_threads: int = 500, val_share: float = 0.02, test_share_max: float = 0.2
) -> pl.DataFrame:
    """Add ``split``: threads ordered by their latest example; newest ``test_threads`` → test, then val.

    The test set never takes more than ``test_share_max`` of the threads, so a small corpus keeps most for training.
    """
    if examples.height == 0:
        return examples.with_columns(pl.lit(None, pl.String).alias("split"))
    threads = (
        examples.group_by("root_uri")
        .agg(pl.col("created_at").max().alias("latest"))
        .sort("latest", "root_uri", descending=True)
    )
    n_threads = threads.height
    n_test = min(test_threads, max(0, n_threads - 2), max(1, int(n_threads * test_share_max)))
    n_val = max(1, round((n_threads - n_test) * val_share)) if n_threads - n_test > 1 else 0
    labels = ["test"] * n_test + ["val"] * n_val + ["train"] * (n_threads - n_test - n_val)
    assignment = threads.with_columns(pl.Series("split", labels, dtype=pl.String)).select("root_uri", "split")
    return examples.join(assignment, on="root_uri", how="left")


def calls_of(row: dict[str, Any], fmt: str) -> list[dict[str, Any]]:
    """The tool calls (``{"name", "arguments"}``) of one dataset row in format ``fmt``."""
    if fmt == "openai":
        return [c["function"] for m in row["messages"] if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    answer = row["conversations"][-1]["value"] if fmt == "sharegpt" else row["output"]
    return list(json.loads(answer))


def tool_call_errors(folder: Path, fmt: str) -> tuple[int, list[str]]:
    """(calls checked, problems) over every split of a dataset folder: each call must be a valid reply call (with
    the arguments its runtime adds, request.json)."""
    files = DatasetPaths(folder)
    allowed = (
        RequestProfile.read(files.request).reply_argument_names() if files.request.exists() else frozenset({"text"})
    )
    checked, errors = 0, []
    for split in SPLITS:
        path = DatasetPaths(folder).split(split)
        if not path.exists():
            errors.append(f"{fmt}/{split}.jsonl is missing")
            continue
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            for function in calls_of(orjson.loads(line), fmt):
                checked += 1
                problems = reply_call_errors(function.get("arguments"), allowed)
                if function.get("name") != REPLY_TOOL_NAME:
                    problems.append(f"unknown tool {function.get('name')!r}")
                errors += [f"{fmt}/{split}.jsonl:{number}: {p}" for p in problems]
    return checked, errors


def leaked_roots(examples: pl.DataFrame) -> list[str]:
    """Thread roots that appear in more than one split (must be none)."""
    counts = examples.group_by("root_uri").agg(pl.col("split").n_unique().alias("splits"))
    return sorted(counts.filter(pl.col("splits") > 1)["root_uri"].to_list())


# --- tokens -----------------------------------------------------------------------------------------------


@dataclass
class TokenReport:
    per_split: dict[str, dict[str, int]]
    over_length: int
    epoch_tokens_by_strategy: dict[str, int]
    exact: bool
    source: str
    shortest: int = 0  # the shortest example with the system prompt, fitting or not


def token_lengths(examples: pl.DataFrame, counter: TokenCounter, profile: RequestProfile = DIRECT_PROFILE) -> pl.Series:
    """Tokens of each example without the system prompt: the user prompt plus the assistant's answer."""
    prompts = counter.count_many(examples["prompt"].to_list())
    columns = (examples[name].to_list() for name in ("calls", "reasoning", "created_at"))
    answers = counter.count_many(
        [
            assistant_text({"calls": calls, "reasoning": reasoning, "created_at": when}, profile)
            for calls, reasoning, when in zip(*columns, strict=True)
        ]
    )
    return pl.Series("tokens", [p + a for p, a in zip(prompts, answers, strict=True)], dtype=pl.Int64)


def token_report(
    examples: pl.DataFrame,
    system_tokens: dict[str, int],
    strategy: str,
    sequence_len: int,
    counter: TokenCounter,
    profile: RequestProfile = DIRECT_PROFILE,
) -> tuple[pl.DataFrame, TokenReport]:
    """Drop examples longer than ``sequence_len`` with the chosen strategy's system prompt; report the rest."""
    lengths = token_lengths(examples, counter, profile)
    examples = examples.with_columns(lengths)
    fits = examples.filter(pl.col("tokens") + system_tokens[strategy] <= sequence_len)
    per_split = {}
    for split in SPLITS:
        tokens = fits.filter(pl.col("split") == split)["tokens"] + system_tokens[strategy]
        per_split[split] = {
            "examples": tokens.len(),
            "p50": int(tokens.quantile(0.5) or 0) if tokens.len() else 0,
            "p95": int(tokens.quantile(0.95) or 0) if tokens.len() else 0,
            "max": int(tokens.max() or 0) if tokens.len() else 0,  # type: ignore[arg-type]
        }
    train = examples.filter(pl.col("split") == "train")["tokens"]
    epoch = {name: int(train.sum()) + train.len() * n for name, n in system_tokens.items()}
    shortest = int(examples["tokens"].min() or 0) + system_tokens[strategy] if examples.height else 0  # type: ignore[arg-type]
    report = TokenReport(per_split, examples.height - fits.height, epoch, counter.exact, counter.source, shortest)
    return fits, report


class InvalidDataset(ValueError):
    """A new dataset broke a blocking rule before it replaced the previous one."""


@dataclass(frozen=True)
class WrittenDataset:
    sizes: dict[str, tuple[int, int]]  # split → (examples, bytes)
    copy_prompt_bytes: int  # what the same rows would take with the system prompt copied into each


def write_dataset(
    folder: Path,
    kept: pl.DataFrame,
    fmt: Format,
    profile: RequestProfile,
    manifest: dict[str, Any],
) -> WrittenDataset:
    """Every file of one chat dataset, written into ``folder`` (a staging folder: the caller swaps it in), then
    checked against the blocking rules (no thread in two splits, every tool call valid): InvalidDataset if not.
    ``system_prompt.txt`` holds the system message once (a ``letta`` profile's rows carry their own: this is the
    one of the newest example, for people to read); ``request.json`` says how every request is made."""
    if profile.runtime == "letta" and fmt != "openai":
        raise InvalidDataset(f"the letta runtime needs the openai format (Letta's request has tool turns), not {fmt}")
    files = DatasetPaths(folder)
    # a letta profile's system message holds a time: the newest example's, so the same rows make the same dataset
    newest = kept["created_at"].max() if kept.height else None
    system = profile.system_message(newest if isinstance(newest, datetime) else None)
    sizes, copy_bytes = {}, 0
    for split in SPLITS:
        rows = kept.filter(pl.col("split") == split).sort("created_at")
        data = encode_rows(rows, fmt, profile)
        write_bytes_atomic(files.split(split), data)
        sizes[split] = (rows.height, len(data))
        copy_bytes += len(data) + rows.height * len(system.encode())
    index = kept.select("example_id", "root_uri", "first_uri", "created_at", "split", "tokens", "source_uris")
    write_parquet_atomic(index, files.index)  # which thread and posts each row came from (split check, forgetting)
    heldout = kept.filter(pl.col("split") == "test").select("example_id", "root_uri", "created_at", "prompt", "calls")
    write_parquet_atomic(heldout.sort("created_at", "example_id"), files.heldout)  # what evaluation answers
    write_text_atomic(files.system_prompt, system)
    write_text_atomic(files.tools, json.dumps(list(profile.tools), indent=2))
    profile.write(files.request)
    splits = {s: {"examples": n, "bytes": b} for s, (n, b) in sizes.items()}
    write_text_atomic(files.manifest, json.dumps({**manifest, "format": fmt, "splits": splits}, indent=2))
    problems = dataset_problems(folder, fmt, index)
    if problems:
        raise InvalidDataset("the new dataset is invalid; the previous one is kept:\n- " + "\n- ".join(problems))
    return WrittenDataset(sizes, copy_bytes)


def dataset_problems(folder: Path, fmt: str, index: pl.DataFrame) -> list[str]:
    """The blocking checks' rules over a dataset folder: no thread root in two splits, every tool call valid."""
    leaked = leaked_roots(index)
    checked, errors = tool_call_errors(folder, fmt)
    problems = [f"thread root {root} is in two splits" for root in leaked[:5]] + errors[:10]
    if not checked:
        problems.append("no tool call in any split")
    return problems
