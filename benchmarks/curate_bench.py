"""Curate at scale: filter + format throughput, training tokens per epoch per context strategy, dataset bytes.

    python benchmarks/curate_bench.py --agent-posts 50000

Runs on the synthetic corpus directly (no devnet: ingest is benchmarked on its own), bound to stand-in DIDs.
Token counts use a BPE tokenizer trained on the corpus (the tiny model's; a real model's tokenizer.json is read
the same way). Prints everything measured side by side in one run.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from void_pipeline.defs.curate.assets import DEMO_SNAPSHOT
from void_pipeline.lib.curate.context import context_windows, load_snapshot
from void_pipeline.lib.curate.dataset import build_examples, encode_rows, format_row, split_by_thread, token_report
from void_pipeline.lib.curate.filters import filter_records, rules_for
from void_pipeline.lib.curate.prompt import TOOL_DESCRIPTION, PromptTemplate
from void_pipeline.lib.ingest.records import Rejection, normalise_record, rows_frame
from void_pipeline.lib.ingest.threads import THREAD_SCHEMA
from void_pipeline.lib.model import TokenCounter
from void_pipeline.testworld.corpus import POST, CorpusSpec, bind_value, generate, record_text
from void_pipeline.testworld.tiny_tokenizer import train_tokenizer


def corpus_frames(agent_posts: int) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, str]:
    """RAW_SCHEMA frames per collection for the agent, and thread_context rows, from the generated corpus."""
    corpus = generate(CorpusSpec(agent_posts=agent_posts))
    dids = {a.handle: "did:plc:" + hashlib.sha256(a.handle.encode()).hexdigest()[:24] for a in corpus.accounts}
    uris = {r.key: f"at://{dids[r.author]}/{r.collection}/{r.rkey}" for r in corpus.records}
    refs = {key: (uri, "bafyreistandin") for key, uri in uris.items()}
    agent_did = dids[corpus.agent.handle]
    by_collection: dict[str, list[dict[str, Any]]] = {}
    for record in corpus.records:
        if record.author != corpus.agent.handle:
            continue
        row = normalise_record(
            agent_did, record.collection, record.rkey, "bafyreistandin", bind_value(record.value, dids, refs)
        )
        if not isinstance(row, Rejection):
            by_collection.setdefault(record.collection, []).append(row)
    by_key = corpus.by_key()
    context: list[dict[str, Any]] = []
    for record in corpus.records:
        if record.author != corpus.agent.handle or record.parent is None:
            continue
        chain: list[dict[str, Any]] = []
        key: str | None = record.parent
        while key is not None:
            parent = by_key[key]
            chain.append(
                {
                    "uri": uris[key],
                    "cid": "c",
                    "author_did": dids[parent.author],
                    "author_handle": parent.author,
                    "text": None if parent.deleted else record_text(parent.value),
                    "created_at": parent.created_at,
                    "available": not parent.deleted,
                    "reason": "deleted" if parent.deleted else None,
                    "source": "appview",
                }
            )
            key = parent.parent
        context.append(
            {
                "uri": uris[record.key],
                "parent_uri": uris[record.parent],
                "root_uri": uris[record.thread or record.key],
                "depth": len(chain),
                "complete": all(a["available"] for a in chain),
                "missing_reason": None,
                "ancestors": list(reversed(chain)),
            }
        )
    frames = {c: rows_frame(rows) for c, rows in by_collection.items()}
    return frames, pl.DataFrame(context, schema=THREAD_SCHEMA), agent_did


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agent-posts", type=int, default=50_000)
    args = parser.parse_args()
    frames, context, agent_did = corpus_frames(args.agent_posts)
    inputs = sum(f.height for f in frames.values())

    started = time.perf_counter()
    filtered = {c: filter_records(f, rules_for(c)) for c, f in frames.items()}
    filter_s = time.perf_counter() - started
    # The corpus is ASCII and NFC runs only on non-ASCII texts: the same filter with every text non-ASCII.
    accented = {c: f.with_columns(pl.col("text") + " café") for c, f in frames.items()}
    started = time.perf_counter()
    for collection, frame in accented.items():
        filter_records(frame, rules_for(collection))
    accented_filter_s = time.perf_counter() - started
    started = time.perf_counter()
    examples, turns = build_examples(filtered[POST].kept, context, PromptTemplate.from_file(), agent_did, None)
    examples = split_by_thread(examples)
    data = encode_rows(examples, "openai")
    format_s = time.perf_counter() - started
    started = time.perf_counter()
    floor_data = encode_rows(examples, "openai")  # the floor: writing the same examples' final JSON, nothing else
    floor_s = time.perf_counter() - started
    assert floor_data == data

    with tempfile.TemporaryDirectory() as tmp:
        texts = [t for f in frames.values() for t in f["text"].to_list()]
        texts += [p.read_text() for p in DEMO_SNAPSHOT.rglob("*.md")]
        counter = TokenCounter.load(train_tokenizer(texts, Path(tmp), vocab_size=8192))
        snapshot = load_snapshot(DEMO_SNAPSHOT)
        started = time.perf_counter()
        windows = context_windows(snapshot, counter, 8192 - 2048, TOOL_DESCRIPTION)
        system_tokens = {name: w.tokens for name, w in windows.items()}
        _, report = token_report(examples, system_tokens, "full", 10**9, counter)
        token_s = time.perf_counter() - started

    data_bytes = len(data)
    system_bytes = len(windows["full"].text.encode())
    rows = examples.to_dicts()
    copy_bytes = sum(len(orjson.dumps(format_row(r, "openai", system=windows["full"].text))) + 1 for r in rows)
    epoch = report.epoch_tokens_by_strategy
    print(f"corpus: {inputs:,} agent records in 4 collections; {turns.turns:,} turns -> {len(rows):,} examples")
    print(
        f"filter:  {filter_s:6.2f} s  ({inputs / filter_s:>10,.0f} records/s; every text non-ASCII: "
        f"{accented_filter_s:.2f} s)"
    )
    print(f"format:  {format_s:6.2f} s  ({inputs / format_s:>10,.0f} records/s; render + split + JSON)")
    print(f"filter + format: {inputs / (filter_s + format_s):,.0f} records/s (goal >= 50,000)")
    print(f"floor:   {floor_s:6.2f} s  (the final JSON alone); format / floor = {format_s / floor_s:.1f}x (goal <= 5x)")
    print(f"tokenisation (reported apart): {token_s:.2f} s for {len(rows):,} examples + 3 context windows")
    print("\ntraining tokens per epoch (train split), by context strategy:")
    for name in ("full", "trimmed", "distilled"):
        print(
            f"  {name:<10} system {system_tokens[name]:>6,} tokens   epoch {epoch[name]:>14,}   "
            f"full/{name} = {epoch['full'] / epoch[name]:.1f}x"
        )
    print(
        f"\ndataset bytes: system prompt stored once {data_bytes + system_bytes:,} vs copied into every row "
        f"{copy_bytes:,} -> {copy_bytes / (data_bytes + system_bytes):.0f}x smaller "
        f"({data_bytes / max(len(rows), 1):,.0f} vs {copy_bytes / max(len(rows), 1):,.0f} bytes per example)"
    )


if __name__ == "__main__":
    main()
