"""``void-pipeline testworld`` (``python -m void_pipeline.testworld``): the local AT Protocol world (devnet) and the end-to-end demo.

devnet up        start a PLC and two PDSes on loopback (detached; state in .data/devnet)
devnet seed      generate the synthetic void corpus and seed it (manifest in .data/devnet/seed)
devnet status    print the running devnet's endpoints
devnet down      stop it, by process id
devnet env       print `export VOID_...=` lines pointing the code location at the devnet
demo             up + seed the demo corpus + materialize every asset, then stop
agent-file [OUT] write the demo agent's Letta Agent File (default: void_pipeline/agents/void-demo.af)

The pipeline never imports this package; the test world drives the pipeline from outside, as a user would.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from void_pipeline.lib import environments
from void_pipeline.lib.curate.dataset import answer_messages
from void_pipeline.lib.curate.prompt import post_answered
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL
from void_pipeline.lib.evaluate.report import call_validity_verdict
from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.layout import (
    REPO_ROOT,
    AgentLayout,
    DataLayout,
    DataRootError,
    EvaluationPaths,
    RunPaths,
    dagster_home,
    data_root,
)
from void_pipeline.lib.train import training
from void_pipeline.testworld.agent_file import DEMO_AGENT_FILE, write_demo_agent_file
from void_pipeline.testworld.corpus import AGENT_NAME, COLLECTIONS, POST, Corpus, CorpusSpec, generate, record_text
from void_pipeline.testworld.demo_console import Story, Terminal, evaluation_table, output_to_log
from void_pipeline.testworld.devnet import (
    Devnet,
    DevnetError,
    DevnetHealth,
    DevnetInfo,
    ServiceProcess,
    is_service_alive,
    seed_dir,
    stop_devnet,
)
from void_pipeline.testworld.live import post_new_replies
from void_pipeline.testworld.seeding import seed_corpus
from void_pipeline.testworld.tiny_tokenizer import train_tokenizer

DEMO_AGENT_POSTS = 2000
SEED_PROGRESS = re.compile(r"\[seed\] [\d,]+/[\d,]+ records")
DEMO_AGENT = "void-demo"  # the demo's agent folder: apart from the real agent's


def devnet_up(state_dir: Path, plc_port: int | None, pds_port: int | None) -> DevnetInfo:
    devnet = Devnet(state_dir, plc_port=plc_port, pds_ports=(pds_port,))
    info = devnet.start()
    print(f"devnet up ({state_dir})")
    print(describe(info))
    return info


def describe(info: DevnetInfo, health: DevnetHealth | None = None) -> str:
    def pid(service: ServiceProcess) -> str:
        dead = health is not None and service.name in health.dead
        return f"(pid {service.pid}{', NOT RUNNING' if dead else ''})"

    lines = [f"  PLC  {info.plc.url}  {pid(info.plc)}"]
    for pds in info.pds:
        lines.append(f"  PDS  {pds.url}  {pds.name}, handles *{pds.handle_domain}  {pid(pds)}")
    if info.appview:
        lines.append(f"  AppView {info.appview.url}  getPosts/getPostThread from the PDSes  {pid(info.appview)}")
    lines.append(f"  logs {Path(info.state_dir) / 'logs'}")
    return "\n".join(lines)


def endpoints(info: DevnetInfo, health: DevnetHealth) -> dict[str, object]:
    return {
        "running": health.state == "running",
        "state": health.state,
        "dead_services": list(health.dead),
        "plc_url": info.plc_url,
        "pds": {p.name: {"url": p.url, "handle_domain": p.handle_domain} for p in info.pds},
        "appview_url": info.appview_url,
    }


def devnet_seed(state_dir: Path, agent_posts: int, seed: int, progress: Callable[[str], None] = print) -> str:
    """Generate and seed the corpus; returns the agent's handle. Also trains the corpus tokenizer for the demo."""
    info = DevnetInfo.load(state_dir)
    spec = CorpusSpec(seed=seed, agent_posts=agent_posts)
    corpus = generate(spec)
    print(f"[seed] generated {len(corpus.records):,} records for {len(corpus.accounts)} accounts (seed {seed})")
    out = seed_dir(state_dir)
    result = seed_corpus(info, corpus, out_dir=out, progress=progress)
    counts = result.manifest.group_by("collection").len().sort("collection")
    for collection in COLLECTIONS:
        n = counts.filter(counts["collection"] == collection)["len"].sum()
        print(f"  {collection:<28} {n:>8,}")
    print(f"agent: {corpus.agent.handle} = {result.accounts[corpus.agent.handle].did}")
    print(f"ground truth: {out}")
    texts = [record_text(r.value) for r in corpus.records]
    models = DataLayout(data_root()).models
    tokenizer_dir = train_tokenizer(texts, models / "tiny-tokenizer")
    pretraining = models / "tiny-pretraining.jsonl"
    write_text_atomic(pretraining, "".join(json.dumps(e) + "\n" for e in instruct_pretraining(corpus)))
    build_tiny_model(tokenizer_dir, models / "tiny", pretraining)
    return corpus.agent.handle


def instruct_pretraining(corpus: Corpus) -> list[dict[str, Any]]:
    """What makes the demo's tiny base an *instruct* stand-in: the other authors' posts as text, and their replies
    as conversations answered with the reply tool in the training rows' shape. The agent's own posts are left out,
    as text, as answers and as the posts answered (the whole conversation is trained on): its voice is what the
    adapter must add."""
    by_key = corpus.by_key()
    examples: list[dict[str, Any]] = []
    for record in corpus.records:
        if record.author == corpus.agent.handle or record.collection != POST or record.deleted:
            continue
        text = record_text(record.value)
        examples.append({"text": text})
        parent = by_key.get(record.parent) if record.parent else None
        if parent is not None and parent.author != corpus.agent.handle and not parent.deleted and text.strip():
            prompt = f'@{parent.author} mentions you: "{record_text(parent.value)}"'
            messages = [{"role": "user", "content": prompt}, *answer_messages([text[:300]], None)]
            examples.append({"messages": messages, "tools": [REPLY_TOOL]})
    return examples


def build_tiny_model(tokenizer_dir: Path, out: Path, pretraining: Path | None = None) -> None:
    """The demo's stand-in base model, built in the trainer environment (the orchestrator never imports torch), or
    copied from the cache when one was built from the same tokenizer, pretraining data and builder before (the same
    seed makes the same corpus): its pretraining is minutes of CPU that a second demo need not spend again."""
    key = environments.content_key(
        (tokenizer_dir / "tokenizer.json").read_bytes(),
        pretraining.read_bytes() if pretraining else b"",
        str(PRETRAIN_STEPS).encode(),
        (REPO_ROOT / "void_pipeline" / "testworld" / "tiny_model.py").read_bytes(),
    )
    cached = environments.cache_root() / "models" / f"tiny-{key}"
    if (cached / environments.COMPLETE_MARKER).exists():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(cached, out, ignore=shutil.ignore_patterns(environments.COMPLETE_MARKER))
        print(f"tiny model (stands in for the base model; built before, from the cache {cached}): {out}")
        return
    _build_tiny_model(tokenizer_dir, out, pretraining)
    staging = cached.with_name(cached.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(out, staging)
    (staging / environments.COMPLETE_MARKER).write_text("ok\n")
    shutil.rmtree(cached, ignore_errors=True)
    staging.rename(cached)


def _build_tiny_model(tokenizer_dir: Path, out: Path, pretraining: Path | None) -> None:
    python = environments.ensure("trainer") / "bin" / "python"
    command = [
        str(python),
        "-m",
        "void_pipeline.testworld.tiny_model",
        "--tokenizer",
        str(tokenizer_dir),
        "--out",
        str(out),
        *(["--pretrain", str(pretraining), "--pretrain-steps", str(PRETRAIN_STEPS)] if pretraining else []),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DevnetError(f"building the tiny model failed:\n{result.stderr[-3000:]}")
    trained = next((line for line in result.stdout.splitlines() if line.startswith("pretrained")), "")
    print(f"tiny model (stands in for the base model{'; ' + trained if trained else ''}): {out}")


# The demo's evaluation: a small held-out sample, short posts, and gates a barely trained tiny model can meet
# (the defaults — 90% valid calls, at most 5 character-sheet answers per 1,000 — are for a real model; README).
DEMO_RUN_CONFIG: dict[str, dict[str, Any]] = {
    # The distilled context (a persona stub, ~200 tokens) packs ~10 examples in each 8192-token row where the
    # trimmed one (~6k tokens) fits one: the tiny model sees ten times the answers in the same CPU time.
    "context_window": {"strategy": "distilled"},
    # A low temperature: the tiny model closes its reply calls far more often (valid answers at 0.7: 1 of 24; at
    # 0.3: 6 of 24); the bundle records the same, so the smoke test asks as the evaluation asked.
    "eval_generations": {"limit": 24, "max_posts": 3, "concurrency": 8, "temperature": 0.3},
    # Lenient, never below "some valid calls": one valid answer in 24 passes; none does not.
    "eval_report": {"min_call_validity": 0.04, "max_character_sheet_per_1000": 1000.0, "review_threads": 10},
    "served_model": {"temperature": 0.3},
}


DEMO_TRAINING_STEPS = 24
# The demo's longest example is ~3,100 tokens: 4096-token rows halve a step's work against the config's 8192.
DEMO_SEQUENCE_LEN = 4096
LIVE = "live"  # the demo's step that posts the agent's new replies (no run)
PRETRAIN_STEPS = 400  # the tiny base's own training (full, on other authors' posts and tool-call chats)


def materialize_all(
    env_overrides: dict[str, str], terminal: Terminal, live_replies: Callable[[], list[str]] | None = None
) -> int:
    """Materialize every asset in dependency order, in this one process: a partitioned asset runs once per
    partition — a day-partitioned one (the shadow run) for today only, after ``live_replies`` posted the agent's
    new replies and the post export and thread context took them in; consecutive unpartitioned assets run together. Each is an ordinary run of the code location's asset
    job, as `make ui` loads the location (re-executable there, on its Timeline). Dagster's lines go to the demo's
    log, each run's story to the terminal as its events arrive; the steps share one vLLM server (evaluation's,
    reused by the smoke test)."""
    os.environ.update(env_overrides)  # the code location reads its settings when it is imported, below
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    if not (home / "dagster.yaml").exists():  # the local instance's settings (never over the operator's own)
        shutil.copyfile(REPO_ROOT / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
    import dagster as dg

    from void_pipeline.definitions import defs
    from void_pipeline.resources.server import InferenceServer
    from void_pipeline.testworld.location_runs import location_runs, project_target

    graph = defs.resolve_asset_graph()
    order = [k for k in graph.toposorted_asset_keys if "void/waits_on" not in graph.get(k).tags]  # not review_results
    if not order:
        print("no assets are defined yet: nothing to materialize")
        return 0
    groups = {key.to_user_string(): graph.get(key).group_name or "" for key in order}
    # One vLLM server per run: the server resource's own settings, keep_running on (run config replaces them all)
    server = (defs.resources or {}).get("server")
    assert isinstance(server, InferenceServer)
    resources = {"server": {"config": {**server.model_dump(), "keep_running": True}}}
    steps: list[tuple[list[dg.AssetKey], str | None]] = []
    today = time.strftime("%Y-%m-%d", time.gmtime())
    for key in order:
        partitions = graph.get(key).partitions_def
        if isinstance(partitions, dg.TimeWindowPartitionsDefinition):
            if live_replies is not None and not any(p == today for _, p in steps):
                # the agent keeps talking after its model was served: the day's new replies, ingested as usual
                steps += [([], LIVE), ([dg.AssetKey("raw_records")], POST), ([dg.AssetKey("thread_context")], None)]
            steps.append(([key], today))
        elif partitions is None:
            if steps and steps[-1][1] is None:
                steps[-1][0].append(key)
            else:
                steps.append(([key], None))
        else:
            steps.extend(([key], partition) for partition in partitions.get_partition_keys())
    story = Story(terminal, groups)  # one for the demo: each stage is told once
    started_all = time.monotonic()
    with dg.DagsterInstance.get() as instance, location_runs(instance, project_target()) as runs:
        # One GPU job at a time: the training step runs in the "gpu" pool.
        instance.event_log_storage.set_concurrency_slots("gpu", 1)
        for keys, partition in steps:
            if partition == LIVE and live_replies is not None:
                posted = live_replies()
                print(f"[demo] the agent posted {len(posted)} new replies today: the shadow run answers them")
                continue
            names = [k.to_user_string() for k in keys]
            label = ",".join(names) + (f" [{partition}]" if partition else "")
            started = time.monotonic()
            ops = {name: {"config": DEMO_RUN_CONFIG[name]} for name in names if name in DEMO_RUN_CONFIG}
            run = runs.materialize(
                keys,
                {"ops": ops, "resources": resources},  # no logger named: Dagster's console one (fd 2: the log)
                partition=partition,
                tags={"void/trigger": "demo"},
                on_event=story.tell,
            )
            if run.status != dg.DagsterRunStatus.SUCCESS:
                events = [entry.dagster_event for entry in instance.all_logs(run.run_id) if entry.dagster_event]
                failures = [  # a step's own error (a Failure's description), not only "step failed"
                    f"{e.step_key}: {e.step_failure_data.error.message.strip()}"
                    if e.is_step_failure and e.step_failure_data.error
                    else e.message or ""
                    for e in events
                    if e.is_failure
                ]
                took = time.monotonic() - started
                terminal.fail("\n".join(failures)[-4000:] + f"\n[demo] {label} failed (run {run.run_id}, {took:.0f} s)")
                return 1
    took_all = time.monotonic() - started_all
    print(f"[demo] {len(order)} assets materialized in {took_all:.0f} s; runs are in {home} (make ui)")
    return 0


def devnet_environment(info: DevnetInfo, agent_handle: str) -> dict[str, str]:
    """The code location's environment for pointing at a devnet (and the demo's tiny model) instead of the
    real network and a real base model."""
    env = {
        "VOID_ACTOR": agent_handle,
        "VOID_AGENT": DEMO_AGENT,
        "VOID_PLC_URL": info.plc_url,
        "VOID_APPVIEW_URL": info.appview_url or "",
    }
    tiny = DataLayout(data_root()).models / "tiny"
    if (tiny / "config.json").exists():
        env.update(
            VOID_BASE_MODEL_PATH=str(tiny),
            VOID_TRAINER_OVERLAYS="tiny",
            VOID_TRAINER_MAX_STEPS=str(DEMO_TRAINING_STEPS),
            VOID_SEQUENCE_LEN=str(DEMO_SEQUENCE_LEN),
        )
    return env


def post_to_answer(prompt: str) -> str:
    """The post a handler prompt asks to answer (the line after "THE POST TO ANSWER:"), shortened for the console."""
    return shorten(post_answered(prompt))


def shorten(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_example(layout: AgentLayout) -> None:
    """One training example of the demo's chat dataset: the post answered and the start of the agent's reply."""
    train = layout.curate.chat_dataset("openai") / "train.jsonl"
    lines = train.read_text().splitlines() if train.exists() else []
    if not lines:
        return
    row = json.loads(lines[0])
    user = next(m["content"] for m in row["messages"] if m["role"] == "user")
    calls = [c["function"]["arguments"]["text"] for m in row["messages"] for c in m.get("tool_calls", [])]
    print(f"\n[demo] one of {len(lines):,} training examples (the first line of {train}):")
    print(f"  the post:    {post_to_answer(user)}")
    print(
        f"  void's reply ({len(calls)} reply call{'s' if len(calls) != 1 else ''}): {shorten(calls[0] if calls else '')}"
    )


def save_demo_settings(env: dict[str, str]) -> Path:
    """The settings the demo ran with, for `make ui`: the UI opens on the demo's agent and data (no devnet needed
    downstream of ingest)."""
    target = DataLayout(data_root()).demo_settings
    keep = {k: v for k, v in env.items() if k not in ("VOID_PLC_URL", "VOID_APPVIEW_URL")}  # the devnet is gone
    write_text_atomic(target, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(keep.items())))
    return target


def demo(agent_posts: int, seed: int, keep_devnet: bool) -> int:
    data = DataLayout(data_root())
    state_dir = data.devnet
    log = data.demo_log
    log.unlink(missing_ok=True)  # this run's lines only
    print(f"[demo] the libraries', converters' and servers' lines go to {log}")
    started = time.monotonic()
    with output_to_log(log) as terminal:
        try:
            existing = DevnetInfo.load(state_dir)
            if any(is_service_alive(p) for p in existing.processes()):
                stop_devnet(existing)
        except DevnetError:
            pass
        info = devnet_up(state_dir, None, None)
        try:
            agent = devnet_seed(state_dir, agent_posts, seed, seeding_progress)
            settings = devnet_environment(info, agent)
            code = materialize_all(settings, terminal, lambda: post_new_replies(info, agent))
            if code == 0:
                layout = data.agent(DEMO_AGENT)
                show_example(layout)
                show_adapter(layout)
                show_evaluation(layout)
                show_serving(layout)
                print(f"[demo] settings for `make ui` (the demo's agent and data): {save_demo_settings(settings)}")
                print("[demo] the runs, lineage and metadata: `make ui`, then open http://127.0.0.1:3000")
        finally:
            if not keep_devnet:
                stop_devnet(info)
                print("devnet stopped")
    print(f"[demo] {'done' if code == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s; every line is in {log}")
    return code


def seeding_progress(line: str) -> None:
    """The demo's seeding: its counts on the console, its running progress in the log."""
    print(line, file=sys.stderr if SEED_PROGRESS.match(line) else sys.stdout)


def show_adapter(layout: AgentLayout) -> None:
    """Where the demo's adapter, merged model and MLflow run are, and what training did to the validation loss."""
    latest = layout.train.read_latest()
    if latest is None:
        return
    run, adapter = RunPaths(latest.run_dir), latest.adapter
    weights = adapter / "adapter_model.safetensors"
    store = DataLayout(data_root()).mlflow / "mlflow.db"
    print(f"\n[demo] LoRA adapter: {adapter} ({weights.stat().st_size if weights.exists() else 0:,} bytes)")
    evals = [e["eval_loss"] for e in training.read_metrics(run) if e["kind"] == "eval"]
    if len(evals) >= 2:
        print(f"[demo] validation loss: {evals[0]:.4f} before training → {evals[-1]:.4f} after")
    if (run.merged / "config.json").exists():
        print(f"[demo] merged model: {run.merged}")
    page = materialization_metadata("lora_adapter").get("mlflow_run")  # its run page, in MLflow's classic view
    where = page.value if page is not None else "http://127.0.0.1:5000"
    print(f"[demo] MLflow run {latest.mlflow_run}: `make mlflow-ui`, then open {where} (store {store})")


def materialization_metadata(asset: str) -> dict[str, Any]:
    """The metadata of the asset's latest materialization in the instance ({} when there is none)."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return dict(event.asset_materialization.metadata) if event and event.asset_materialization else {}


def show_serving(layout: AgentLayout) -> None:
    """The bundle served_model promoted, and how to serve it and ask it."""
    from void_pipeline.lib.serve.bundle import current_bundle

    bundle = current_bundle(layout.serve)
    if bundle is None:
        return
    print(f"\n[demo] serving bundle v{bundle.version:04d} is current: {bundle.paths.root}")
    metadata = materialization_metadata("served_model")
    if "smoke_answer" in metadata:
        prompt, answer = str(metadata["smoke_prompt"].value), str(metadata["smoke_answer"].value)
        print("[demo] its smoke test, a held-out thread asked as the handler asks (lib/serve/client.py):")
        print(f"  the post:  {post_to_answer(prompt.strip('`'))}")
        print(f"  its reply: {shorten(answer)}")
    print(
        f"[demo] serve it: VOID_SERVE_API_KEY=... ./void-pipeline serve up --agent {DEMO_AGENT}; ask it: ./void-pipeline "
        f"reply <at://post> --agent {DEMO_AGENT} --appview-url <an AppView>"
    )


def show_evaluation(layout: AgentLayout) -> None:
    """The evaluation's headline table: base vs tuned vs the real replies on the held-out threads."""
    latest = layout.evaluate.read_latest()
    if latest is None:
        return
    files = EvaluationPaths(latest.folder)
    if not files.report.exists():
        return
    report = json.loads(files.report.read_text())
    print(
        f"\n[demo] evaluation on {report.get('examples', '?')} held-out threads (every metric: {files.report_markdown}):"
    )
    print(evaluation_table(report))
    print(f"[demo] {call_validity_verdict(report)}")
    from void_pipeline.lib.evaluate import review  # scipy: only once there is an evaluation

    pack = review.pack_path(files.review)
    if pack.exists():
        print(f"[demo] rate its blind review pack on a local page: ./void-pipeline review --rater NAME --pack {pack}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="void-pipeline testworld", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path, default=None, help="devnet state folder (default <data>/devnet)")
    sub = parser.add_subparsers(dest="command", required=True)
    devnet = sub.add_parser("devnet", help="the local AT Protocol world")
    devnet_sub = devnet.add_subparsers(dest="action", required=True)
    up = devnet_sub.add_parser("up", help="start a PLC and two PDSes on 127.0.0.1")
    up.add_argument("--plc-port", type=int, default=None, help="preferred PLC port (another is taken if busy)")
    up.add_argument("--pds-port", type=int, default=None, help="preferred port of the agent's PDS")
    seed = devnet_sub.add_parser("seed", help="generate the synthetic corpus and seed it")
    seed.add_argument("--agent-posts", type=int, default=DEMO_AGENT_POSTS, help="scale N: the agent's posts")
    seed.add_argument("--seed", type=int, default=7, help="generator seed (same seed, same corpus)")
    status = devnet_sub.add_parser("status", help="print the running devnet's endpoints")
    status.add_argument("--json", action="store_true", help="endpoints as JSON (no secrets), for configuration")
    devnet_sub.add_parser("down", help="stop the devnet by process id")
    devnet_sub.add_parser("env", help="print `export VOID_...=` lines pointing the code location at the devnet")
    demo_cmd = sub.add_parser("demo", help="devnet + demo corpus + materialize every asset")
    demo_cmd.add_argument("--agent-posts", type=int, default=DEMO_AGENT_POSTS)
    demo_cmd.add_argument("--seed", type=int, default=7)
    demo_cmd.add_argument("--keep-devnet", action="store_true", help="leave the devnet running afterwards")
    agent_file = sub.add_parser("agent-file", help="write the demo agent's Letta Agent File (from the demo snapshot)")
    agent_file.add_argument("out", type=Path, nargs="?", default=DEMO_AGENT_FILE)
    args = parser.parse_args(argv)
    try:
        if args.command == "agent-file":
            print(f"wrote {write_demo_agent_file(args.out)}")
            return 0
        state_dir = (args.state_dir or DataLayout(data_root()).devnet).resolve()
        if args.command == "demo":
            return demo(args.agent_posts, args.seed, args.keep_devnet)
        if args.action == "up":
            devnet_up(state_dir, args.plc_port, args.pds_port)
        elif args.action == "seed":
            devnet_seed(state_dir, args.agent_posts, args.seed)
        elif args.action == "status":
            info = DevnetInfo.load(state_dir)
            health = info.health()
            if args.json:
                print(json.dumps(endpoints(info, health), indent=2))
            else:
                print(f"devnet {health.summary()} (started {info.started_at})")
                print(describe(info, health))
            return 0 if health.state == "running" else 1
        elif args.action == "env":
            info = DevnetInfo.load(state_dir)
            health = info.health()
            if health.state != "running":
                print(f"error: the devnet is {health.summary()} (make devnet-up)", file=sys.stderr)
                return 1
            for name, value in devnet_environment(info, f"{AGENT_NAME}{CorpusSpec().agent_domain}").items():
                print(f"export {name}={shlex.quote(value)}")
        elif args.action == "down":
            info = DevnetInfo.load(state_dir)
            stopped = stop_devnet(info)
            print(f"devnet down: stopped pids {stopped}" if stopped else "devnet was not running")
    except (DevnetError, DataRootError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a folder that vanished or filled up mid-run: say which, without a traceback
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
