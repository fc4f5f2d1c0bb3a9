"""``void-pipeline`` (``python -m void_pipeline``): the pipeline's own commands, without Dagster.

python -m void_pipeline export ACTOR     export an agent's repo and thread context to Parquet
python -m void_pipeline prompt --thread FILE | --uri AT_URI [--template FILE] [--handler PROFILE]
                                         the prompt the model gets for that thread (the handler's rendering)
python -m void_pipeline context --agent-file FILE.af | --snapshot DIR --budget N [--runtime letta|direct]
                                [--tokenizer DIR] [--json]
                                         the full/trimmed/distilled context windows and what trimming kept
python -m void_pipeline serve up|status|down|list|promote
                                         the served model's long-running vLLM server and its bundles
python -m void_pipeline reply AT_URI [--post]
                                         answer one post with the served model, as the handler would
python -m void_pipeline export-adapter --for together|fireworks --out DIR [--adapter PATH]
                                         the adapter as a managed host takes it, with the upload steps
python -m void_pipeline settings [--json]  every VOID_* setting in force and where it came from
python -m void_pipeline ui [--port N]    the Dagster UI (dg dev) on a port checked free first (make ui)
python -m void_pipeline free-slots [--fail-run RUN_ID]
                                         give back the pool slots ("gpu") that dead runs hold ($DAGSTER_HOME)
python -m void_pipeline review --rater NAME [--pack FILE] [--port N] | --results
                                         the blind review page over the latest evaluation's pack (loopback)

The local AT Protocol world and the demo are the test world's: ``./void-pipeline testworld --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from void_pipeline import cli_ops, cli_serve
from void_pipeline.lib.curate.context import context_windows, load_context_source
from void_pipeline.lib.curate.handler import PARENT_HEIGHT, handler_profile, thread_from_response
from void_pipeline.lib.curate.prompt import TOOL_DESCRIPTION, PromptTemplate, render_mention
from void_pipeline.lib.curate.request import DEFAULT_HANDLER, RUNTIMES
from void_pipeline.lib.curate.runtime import renderer_for
from void_pipeline.lib.files import Busy, write_text_atomic
from void_pipeline.lib.ingest.agent import ingest_agent
from void_pipeline.lib.ingest.export import CorruptState, ExportOptions
from void_pipeline.lib.ingest.identity import IdentityError, actor_syntax_error
from void_pipeline.lib.ingest.records import DEFAULT_COLLECTIONS, collection_error
from void_pipeline.lib.ingest.resilience import DEFAULT_LIMITS, HostLimit, ResilientHttp, TransportFailure
from void_pipeline.lib.ingest.xrpc import XrpcClient, XrpcError
from void_pipeline.lib.layout import DataLayout, agent_name_error, data_root, default_agent_name
from void_pipeline.lib.model import TokenCounter
from void_pipeline.lib.settings import DEFAULT_APPVIEW_URL, DEFAULT_PLC_URL

TEST_WORLD_COMMANDS = ("devnet", "demo", "testworld")


class UsageError(ValueError):
    """A bad argument: printed as one line, exit code 2."""


def writable_folder(path: Path, option: str) -> Path:
    """``path`` as a folder we can write in (created if missing), or a one-line ``UsageError``."""
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"{option} {path} is not writable: {err.strerror or err}") from err
    return path


def export_command(args: argparse.Namespace) -> int:
    collections = [c.strip() for c in args.collections.split(",") if c.strip()]
    if not collections:
        raise UsageError("--collections names no collection")
    for collection in collections:
        if error := collection_error(collection):
            raise UsageError(f"--collections: {error}")
    if error := actor_syntax_error(args.actor):
        raise UsageError(error)
    for option, rate in (("--pds-rps", args.pds_rps), ("--appview-rps", args.appview_rps)):
        if not 0 < rate < float("inf"):  # 0 would wait forever; NaN compares false here too
            raise UsageError(f"{option} {rate:g}: requests per second must be a finite number above 0 (e.g. 0.5 or 10)")
    out = writable_folder(args.out or data_root(), "--out")
    agent_name = args.agent or default_agent_name(args.actor)
    if error := agent_name_error(agent_name):
        raise UsageError(f"--agent: {error}")
    layout = DataLayout(out)
    for earlier in layout.earlier_layout_exports():
        print(f"warning: {earlier} holds an export in the layout before agents/: it is not read; delete it when done")
    http = ResilientHttp(default_limit=HostLimit(args.pds_rps, max(1.0, args.pds_rps * 5)))
    http.set_limit(args.appview_url, HostLimit(args.appview_rps, max(1.0, args.appview_rps * 2)))
    options = ExportOptions(method=args.method, full_refresh=args.full_refresh)
    with http:
        summary = ingest_agent(
            http,
            args.actor,
            args.plc_url,
            args.appview_url,
            layout.agent(agent_name),
            collections,
            options,
            pds_url=args.pds_url,
        )
    for collection, result in summary.collections.items():
        print(
            f"  {collection:<28} {result.total_rows:>8,} rows ({result.new:,} new, "
            f"{result.quarantined:,} quarantined) via {result.method}"
        )
    if summary.thread_stats is not None:
        print(f"  thread context: {summary.replies:,} replies, {summary.thread_stats.as_dict()}")
    print(f"  HTTP: {summary.requests}")
    if args.summary_json:
        rows = sum(r.total_rows for r in summary.collections.values())
        numbers = {
            "did": summary.did,
            "records": rows,
            "replies": summary.replies,
            "http": summary.requests,
            "threads": summary.thread_stats.as_dict() if summary.thread_stats else None,
        }
        write_text_atomic(args.summary_json, json.dumps(numbers, indent=2))
    print("done")
    return 0


def prompt_command(args: argparse.Namespace) -> int:
    """Print the rendered mention prompt for one thread: a getPostThread response from a file or the AppView."""
    if (args.thread is None) == (args.uri is None):
        raise UsageError("give exactly one of --thread FILE and --uri AT_URI")
    template = PromptTemplate.from_file(args.template)
    if args.thread is not None:
        try:
            response = json.loads(Path(args.thread).read_text())
        except FileNotFoundError as err:
            raise UsageError(f"--thread {args.thread} does not exist") from err
        except ValueError as err:
            raise UsageError(f"--thread {args.thread} is not JSON: {err}") from err
    else:
        with ResilientHttp() as http:
            appview = XrpcClient(args.appview_url, client=http)
            response = appview.query("app.bsky.feed.getPostThread", uri=args.uri, parentHeight=PARENT_HEIGHT, depth=0)
    handler_profile(args.handler)  # an unknown name: one line naming the known ones
    sys.stdout.write(render_mention(thread_from_response(response), template, handler=args.handler) + "\n")
    return 0


def context_command(args: argparse.Namespace) -> int:
    """The three context windows of an agent file or a snapshot folder at a token budget, as the runtime sends the
    system message, with the per-block table (or all of it as JSON)."""
    if args.budget < 1:
        raise UsageError(f"--budget {args.budget}: a token budget is a whole number of at least 1")
    source = args.agent_file or args.snapshot
    if args.agent_file and not args.agent_file.is_file():
        raise UsageError(f"--agent-file {args.agent_file}: no such file (a Letta agent file, .af)")
    if args.snapshot and not args.snapshot.is_dir():
        raise UsageError(f"--snapshot {args.snapshot}: no such folder (an exported context folder)")
    snapshot = load_context_source(source)
    counter = TokenCounter.load(args.tokenizer)
    renderer = renderer_for(args.runtime, snapshot)
    windows = list(context_windows(snapshot, counter, args.budget, TOOL_DESCRIPTION, renderer).values())
    if args.json:
        data = {
            "source": str(source),
            "runtime": args.runtime,
            "agent_type": snapshot.agent.agent_type if snapshot.agent else None,
            "prompt_template": str(snapshot.prompt_template) if snapshot.prompt_template else None,
            "budget": args.budget,
            "tokenizer": counter.source,
            "warnings": list(snapshot.warnings),
            "windows": {
                w.strategy: {"tokens": w.tokens, "text": w.text, "blocks": [asdict(b) for b in w.blocks]}
                for w in windows
            },
        }
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    for warning in snapshot.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    kind = f"{snapshot.agent.agent_type} agent file" if snapshot.agent else "snapshot folder"
    print(f"{source}: {kind}, {len(snapshot.blocks)} blocks, persona {snapshot.persona_block or '(none)'}")
    if snapshot.prompt_template:
        print(f"handler template: {snapshot.prompt_template} (chat_dataset uses it unless template_path is set)")
    print(
        f"tokens ({counter.source}, the system message as {args.runtime} sends it): "
        + ", ".join(f"{w.strategy} {w.tokens:,}" for w in windows)
        + f"; budget {args.budget:,}"
    )
    print(f"{'block':<32} {'priority':>8} {'tokens':>8} {'kept':>8}  trimmed")
    for block in windows[1].blocks:
        print(f"{block.label:<32} {block.priority:>8} {block.tokens:>8,} {block.tokens_kept:>8,}  {block.status}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TEST_WORLD_COMMANDS:
        words = argv[1:] if argv[0] == "testworld" else argv  # the launcher's passthrough, reached without it
        print(
            f"error: `{argv[0]}` belongs to the test world: ./void-pipeline testworld {' '.join(words)}",
            file=sys.stderr,
        )
        return 2
    parser = argparse.ArgumentParser(
        prog="void-pipeline",
        description=__doc__.split("\n")[0],
        epilog="the local AT Protocol world and the demo: void-pipeline testworld --help",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="export an agent's repo and thread context to Parquet, without Dagster")
    export.add_argument("actor", help="handle or DID")
    export.add_argument("--plc-url", default=DEFAULT_PLC_URL)
    export.add_argument("--appview-url", default=DEFAULT_APPVIEW_URL)
    export.add_argument("--pds-url", default=None, help="override the PDS from the DID document")
    export.add_argument("--out", type=Path, default=None, help="data root (default $VOID_PIPELINE_DATA or .data)")
    export.add_argument(
        "--agent", default=None, help="the agent's folder name under <out>/agents/ (default: the handle's first label)"
    )
    export.add_argument("--method", choices=["car", "list_records"], default="car")
    export.add_argument("--full-refresh", action="store_true")
    export.add_argument("--collections", default=",".join(DEFAULT_COLLECTIONS))
    export.add_argument(
        "--pds-rps", type=float, default=DEFAULT_LIMITS["pds"].requests_per_second, help="requests per second to a PDS"
    )
    export.add_argument(
        "--appview-rps",
        type=float,
        default=DEFAULT_LIMITS["appview"].requests_per_second,
        help="requests per second to the AppView",
    )
    export.add_argument("--summary-json", type=Path, default=None, help="also write the run's numbers here")
    prompt = sub.add_parser("prompt", help="print the prompt the model gets for a thread, as the handler renders it")
    prompt.add_argument("--thread", type=Path, default=None, help="a getPostThread JSON response")
    prompt.add_argument("--uri", default=None, help="an AT URI: the thread is fetched from the AppView")
    prompt.add_argument("--appview-url", default=DEFAULT_APPVIEW_URL)
    prompt.add_argument("--template", type=Path, default=None, help="the operator's template (default: ours)")
    prompt.add_argument(
        "--handler", default=DEFAULT_HANDLER, help=f"how the thread is shown (default {DEFAULT_HANDLER}; umbra@cae8c07)"
    )
    context = sub.add_parser("context", help="the context windows of an agent file or snapshot at a token budget")
    source = context.add_mutually_exclusive_group(required=True)
    source.add_argument("--agent-file", type=Path, default=None, help="a Letta agent file (.af)")
    source.add_argument("--snapshot", type=Path, default=None, help="a context folder (the export tool's, or ours)")
    context.add_argument(
        "--runtime", choices=RUNTIMES, default="letta", help="who compiles the system message (default: letta)"
    )
    context.add_argument("--budget", type=int, required=True, help="tokens for the trimmed window")
    context.add_argument("--tokenizer", type=Path, default=None, help="a model folder with tokenizer.json")
    context.add_argument("--json", action="store_true", help="everything as JSON, each window's text included")
    cli_serve.add_commands(sub)
    cli_ops.add_commands(sub)
    if argv and argv[0] in cli_serve.OWN_COMMANDS:
        return cli_serve.main(argv)
    args = parser.parse_args(argv)
    if args.command in cli_ops.COMMANDS:
        return cli_ops.COMMANDS[args.command](args)
    commands = {"prompt": prompt_command, "context": context_command, "export": export_command}
    try:
        return commands[args.command](args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (IdentityError, TransportFailure, XrpcError, CorruptState, Busy, ValueError) as err:  # SnapshotError too
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a folder that vanished or filled up mid-run: say which, without a traceback
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
