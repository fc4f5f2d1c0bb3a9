"""lora_adapter and merged_model as Dagster assets: real axolotl through Pipes, metrics in Dagster and MLflow,
a registered adapter, a merged standalone model, resume after a kill, and bad inputs refused before training."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import orjson
import pytest

from void_pipeline.lib import processes
from void_pipeline.lib.files import acquire_owner
from void_pipeline.lib.layout import REPO_ROOT, RunPaths, TrainPaths
from void_pipeline.lib.model import choose_model
from void_pipeline.lib.train.runs import CannotTrain, plan_training
from void_pipeline.lib.train.training import History, loss_png, read_metrics, read_state
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline_tests.support.runs import failure_text, value
from void_pipeline_tests.support.trainer import Trained, dataset_sha256, materialize, mlflow_run, run_trainer
from void_pipeline_tests.support.world import model_choice


@pytest.mark.integration
def test_the_adapter_trains_learns_is_tracked_registered_and_merged(
    curated: dict[str, Any], tiny_model: Path, trainer_bin: Path, trained: Trained
) -> None:
    """The session's shared adapter (the root conftest's `trained`: 12 steps, logging every 2, then merged)."""
    instance, result = trained.instance, trained.result
    meta = result.asset_materializations_for_node("lora_adapter")[0].metadata
    adapter = Path(str(value(meta, "adapter_path")))
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0 and value(meta, "steps") == 12
    lora = json.loads((adapter / "adapter_config.json").read_text())  # the tiny overlay's LoRA on every projection
    assert lora["r"] == 8 and {"q_proj", "k_proj", "v_proj", "o_proj", "down_proj"} <= set(lora["target_modules"])
    assert sorted(p.name for p in adapter.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]
    assert value(meta, "base_model") == str(tiny_model) and "| 12 |" in str(value(meta, "loss_curve"))
    # a real learning signal on the held-out validation split, measured by axolotl before and after training
    assert value(meta, "val_rows") > 0
    assert value(meta, "val_loss_after") < value(meta, "val_loss_before")
    assert 0 < value(meta, "packing_efficiency") <= 1 and value(meta, "tokens_per_second") > 0
    plot = str(value(meta, "loss_plot"))  # the PNG inline (the UI shows it), and where it lies
    png = base64.b64decode(plot.split("data:image/png;base64,")[1].split(")")[0])
    assert png.startswith(b"\x89PNG\r\n") and Path(plot.split("`")[-2]).read_bytes() == png
    run_id = str(value(meta, "mlflow_run_id"))  # links into the MLflow UI, the run and its charts
    assert str(value(meta, "mlflow_run")).startswith("http://127.0.0.1:5000/#/experiments/")
    assert str(value(meta, "mlflow_run")).endswith(f"/runs/{run_id}?workflowType=machine_learning")  # classic view
    assert str(value(meta, "loss_chart")) == str(value(meta, "mlflow_run")).replace("?", "/model-metrics?")
    assert value(meta, "dataset_train_examples") > 0
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("step 12: loss" in m for m in messages)  # the external process's progress, in Dagster's log
    assert any("validation at step 0" in m for m in messages)

    run = mlflow_run(curated, result.run_id)
    assert run.data.params["base_model"] == str(tiny_model) and run.data.params["max_steps"] == "12"
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(2, 13, 2))
    assert len(client.get_metric_history(run.info.run_id, "eval_loss")) >= 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in artifacts
    assert {"axolotl.yml", "loss_curve.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    version = client.get_model_version("void-lora", str(value(meta, "registered_model")).split(" v")[-1])
    storage: PipelineStorage = curated["storage"]
    dataset = next(Path(storage.root).glob("agents/*/curate/chat_dataset/openai"))
    assert version.run_id == run.info.run_id and version.tags["dataset_sha256"] == dataset_sha256(dataset)
    assert version.tags["config_fingerprint"] == read_state(RunPaths(adapter.parent))["fingerprint"]

    merged = Path(str(result.asset_materializations_for_node("merged_model")[0].metadata["merged_path"].value))
    assert merged == RunPaths(adapter.parent).merged and [p.name for p in adapter.parent.glob(".*")] == []
    check = (
        "import sys, torch; from safetensors.torch import load_file; from transformers import AutoModelForCausalLM;"
        "from peft import PeftModel; merged_dir, base_dir, adapter_dir = sys.argv[1:4];"
        "merged = load_file(merged_dir + '/model.safetensors'); base = load_file(base_dir + '/model.safetensors');"
        "assert set(merged) == set(base) and not any('lora' in k for k in merged);"
        "changed = sorted(k for k in merged if not torch.equal(merged[k], base[k]));"
        "assert changed and all(k.split('.')[-2].endswith('_proj') for k in changed), changed;"
        "model = AutoModelForCausalLM.from_pretrained(merged_dir).eval();"
        "reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval();"
        "ids = torch.arange(1, 33).unsqueeze(0);"
        "gap = (model(ids).logits - reference(ids).logits).abs().max().item();"
        "assert gap < 1e-4, gap; print(len(changed), gap)"
    )
    loaded = run_trainer(
        trainer_bin, str(trainer_bin / "python"), "-c", check, str(merged), str(tiny_model), str(adapter)
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]


def trainer_processes(config: Path) -> list[int]:
    """Processes of the trainer that read this config (axolotl and the accelerate launcher it starts)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(config) in cmdline and "axolotl" in cmdline:
            found.append(int(proc.name))
    return found


def wait_for(condition: Any, timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())


@pytest.mark.integration
def test_killing_the_run_worker_stops_the_trainer_and_the_next_run_resumes(
    curated: dict[str, Any], tiny_model: Path, trainer_bin: Path, tmp_path: Path
) -> None:
    """The Dagster run worker (here `dagster asset materialize`, steps in child processes) is SIGKILLed mid-training:
    its step, the Pipes trainer and every axolotl process die with it; while it trained, a second run refused the
    locked run folder naming the holder; afterwards the folder's lock is free, the gpu pool's slot is free (a GPU
    step of the same instance runs), and the next run resumes there."""
    storage: PipelineStorage = curated["storage"]
    (tmp_path / "dagster.yaml").write_text((REPO_ROOT / "deploy" / "dagster.local.yaml").read_text())  # gpu pool: 1
    endpoint = curated["resources"]["endpoint"]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DAGSTER_HOME": str(tmp_path),
        "VOID_PIPELINE_DATA": storage.root,
        "VOID_ACTOR": endpoint.actor,
        "VOID_PLC_URL": endpoint.plc_url,
        "VOID_APPVIEW_URL": endpoint.appview_url,
        "VOID_BASE_MODEL_PATH": str(tiny_model),
        "VOID_SEQUENCE_LEN": "4096",
        "VOID_TRAINER_OVERLAYS": "tiny",
        "VOID_TRAINER_MAX_STEPS": "10",  # tiny saves every 5 steps: killed after checkpoint-5, resumed there
    }
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "void_pipeline.definitions"]
    worker = subprocess.Popen(
        [*command, "--select", "lora_adapter"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "worker.log").open("w"),
        start_new_session=True,
    )
    try:

        def states() -> list[Path]:
            return [
                p
                for p in Path(storage.root).glob("agents/*/train/*/adapter/checkpoint-5/trainer_state.json")
                if "max_steps: 10\n" in (p.parents[2] / "axolotl.yml").read_text()
            ]

        assert wait_for(lambda: states() or worker.poll() is not None, 600, 0.05), "no checkpoint-5 in time"
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        run_dir = states()[0].parents[2]
        trainers = trainer_processes(run_dir / "axolotl.yml")
        tree = processes.descendants(worker.pid)
        assert trainers and set(trainers) <= set(tree)
        for pid in trainers:  # hold training still while a second run tries the same folder
            os.kill(pid, signal.SIGSTOP)
        try:
            second = materialize(curated, tiny_model, trainer_bin, {"max_steps": 10})
        finally:
            for pid in trainers:
                os.kill(pid, signal.SIGCONT)
        refusal = failure_text(second)
        assert f"run folder {run_dir} is in use by pid" in refusal and "training, Dagster run" in refusal
        worker.kill()  # SIGKILL: no handler of the run worker runs
        worker.wait()
        assert wait_for(lambda: not any(processes.pid_alive(p) for p in tree), 300), [  # a hang guard, not a bound
            p for p in tree if processes.pid_alive(p)
        ]
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    acquire_owner(run_dir / "trainer.lock", "test", "run folder").release()  # the dead trainer's lock is free
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        (killed_run,) = instance.get_runs()  # the CLI's run (the refused one ran in process, elsewhere)
        assert killed_run.status == dg.DagsterRunStatus.FAILURE  # recorded by its step, not left STARTED
        assert any("run worker (pid" in (e.message or "") for e in instance.all_logs(killed_run.run_id))
        gpu = instance.event_log_storage.get_concurrency_info("gpu")
        assert gpu.limit == 1 and killed_run.run_id not in gpu.active_run_ids  # the dead run's slot is back
    first_lines = [orjson.loads(line) for line in (run_dir / "metrics.jsonl").read_bytes().splitlines() if line]
    trained_before = [e["step"] for e in first_lines if e["kind"] == "train"]
    assert trained_before[:5] == [1, 2, 3, 4, 5]

    resumed = materialize(curated, tiny_model, trainer_bin, {"max_steps": 10})
    assert resumed.success, failure_text(resumed)
    meta = resumed.asset_materializations_for_node("lora_adapter")[0].metadata
    assert Path(str(value(meta, "run_dir"))) == run_dir  # the same folder, picked up where it stopped
    checkpoint = run_dir / "adapter" / str(value(meta, "resumed_from"))
    start = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
    assert start >= 5 and value(meta, "resumed_at_step") == start and value(meta, "steps") == 10
    raw = [orjson.loads(line) for line in (run_dir / "metrics.jsonl").read_bytes().splitlines() if line]
    after = [e["step"] for e in raw[len(first_lines) :] if e["kind"] == "train"]
    assert after == list(range(start + 1, 11))  # continued from the checkpoint, not from step 1
    assert read_state(RunPaths(run_dir))["dagster_runs"][-1] == resumed.run_id
    assert mlflow_run(curated, resumed.run_id).data.tags["resumed_from"] == value(meta, "resumed_from")

    # A step of the gpu pool in the instance the killed run used gets the pool's one slot (before, it waited forever)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert gpu_step_runs(instance, timeout_s=60), "a gpu-pool step is still blocked by the killed run's slot"


def gpu_step_runs(instance: dg.DagsterInstance, timeout_s: float) -> bool:
    """A trivial step in the gpu pool (where lora_adapter, merged_model, evaluation and serving run), executed in
    ``instance``: True when its body ran within ``timeout_s`` (it runs only once the pool granted the slot); False
    when it still waits for one. The run's own teardown is not waited on: it is not what the slot decides."""
    ran = threading.Event()

    @dg.asset(pool="gpu")
    def gpu_probe() -> None:
        ran.set()

    worker = threading.Thread(target=lambda: dg.materialize([gpu_probe], instance=instance))
    worker.daemon = True  # a blocked probe must not hold the test session open
    worker.start()
    granted = ran.wait(timeout_s)
    worker.join(timeout_s)  # let a granted run finish before its instance is closed
    return granted


@pytest.mark.integration
def test_an_unknown_config_key_fails_before_training_with_a_clear_message(
    curated: dict[str, Any], tiny_model: Path, trainer_bin: Path
) -> None:
    """Through the asset: axolotl's own validation in the trainer environment refuses the config (the refusals
    the training plan makes are below, against the plan itself)."""
    result = materialize(curated, tiny_model, trainer_bin, {"max_steps": 2, "lora_rank": 8})
    text = failure_text(result)
    assert "config: unknown config key: lora_rank" in text, text
    run = RunPaths(next(Path(curated["storage"].root).glob("agents/*/train")) / result.run_id)
    assert not (run.adapter / "adapter_model.safetensors").exists()
    assert not [e for e in read_metrics(run) if e.get("kind") == "train"]  # refused before a training step


@pytest.mark.integration  # the curated dataset comes from the session's devnet
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_base_model", "base model path /nonexistent/llama does not exist"),
        ("sequence_len", "the dataset was built for sequence_len 4096 and this training uses 64"),
        ("model_family", "holds a llama model, not the qwen model axolotl config 'qwen2.5-7b-instruct' names"),
        ("output_collision", "output directory collision"),
        ("no_trainable_examples", "no trainable examples"),
    ],
)
def test_bad_inputs_are_refused_by_the_training_plan_with_a_clear_message(
    case: str, expected: str, curated: dict[str, Any], tiny_model: Path, tmp_path: Path
) -> None:
    """What lora_adapter plans before it starts a trainer: every bad input refused, nothing written to train from."""
    dataset = curated["storage"].agent_layout.curate.latest_dataset()
    local_path = str(tiny_model)
    overrides: dict[str, Any] = {"max_steps": 2}
    choice: dict[str, Any] = {}
    if case == "missing_base_model":
        local_path = "/nonexistent/llama"
    elif case == "sequence_len":
        choice["sequence_len"] = 64
    elif case == "model_family":  # Qwen chosen, a local copy of a Llama given: it must not train Llama as "Qwen"
        choice["config"] = "qwen2.5-7b-instruct"
    elif case == "output_collision":
        (tmp_path / "earlier").mkdir()
        (tmp_path / "earlier" / "adapter_model.safetensors").write_bytes(b"an earlier adapter")
        overrides["output_dir"] = str(tmp_path / "earlier")
    else:  # a dataset whose rows hold no assistant turn
        source, dataset = dataset, tmp_path / "dataset" / dataset.name
        shutil.copytree(source, dataset)
        rows = [orjson.loads(line) for line in (source / "train.jsonl").read_bytes().splitlines()]
        stripped = [{**r, "messages": [m for m in r["messages"] if m["role"] != "assistant"]} for r in rows]
        (dataset / "train.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in stripped) + b"\n")
    train = TrainPaths(tmp_path / "train")
    with pytest.raises((CannotTrain, ValueError)) as refused:
        model = model_choice(local_path=local_path, **choice)
        chosen = choose_model(model.config, model.overlays, model.local_path, model.sequence_len)
        plan_training(train, dataset, chosen, overrides, "bad-input")
    text = "\n".join(refused.value.errors) if isinstance(refused.value, CannotTrain) else str(refused.value)
    assert expected in text, text
    assert not train.run("bad-input").config.exists()  # no config for a trainer to start from
    if case == "output_collision":
        assert (tmp_path / "earlier" / "adapter_model.safetensors").read_bytes() == b"an earlier adapter"


def test_metrics_history_keeps_the_latest_line_per_step_and_skips_a_cut_line(tmp_path: Path) -> None:
    lines = [
        {"kind": "eval", "step": 0, "eval_loss": 7.3},
        {"kind": "train", "step": 1, "loss": 7.2},
        {"kind": "train", "step": 2, "loss": 7.1},
        {"kind": "train", "step": 2, "loss": 7.0},  # logged again after a resume from checkpoint-1
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"kind": "tra')
    history = read_metrics(RunPaths(tmp_path))
    assert [(e["kind"], e["step"]) for e in history] == [("eval", 0), ("train", 1), ("train", 2)]
    assert history[-1]["loss"] == 7.0


def test_history_reads_the_steps_the_trainer_numbered_and_plots_them(tmp_path: Path) -> None:
    lines = [
        {"kind": "setup", "step": 0, "max_steps": 6, "packing_efficiency": 0.9},
        {"kind": "eval", "step": 0, "eval_loss": 7.5},
        {"kind": "train", "step": 2, "loss": 7.3, "learning_rate": 5e-3, "grad_norm": 1.5},
        {"kind": "train", "step": 4, "loss": 7.1, "learning_rate": 5e-3, "grad_norm": 1.2},
        {"kind": "train", "step": 6, "loss": 6.9, "learning_rate": 5e-3, "grad_norm": 1.1},
        {"kind": "eval", "step": 6, "eval_loss": 7.0},
        {"kind": "summary", "step": 6, "train_runtime": 12.5},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    history = History(read_metrics(RunPaths(tmp_path)))
    assert history.train == [(2, 7.3), (4, 7.1), (6, 6.9)] and history.evals == [(0, 7.5), (6, 7.0)]
    assert history.summary == {"kind": "summary", "train_runtime": 12.5}
    markdown = history.curve_markdown()
    assert "step 2 → 6" in markdown and "| 4 | 7.1000 |" in markdown and "step 6: validation loss 7.0000" in markdown
    png = loss_png(history.train, history.evals, tmp_path / "loss.png")
    assert png.read_bytes().startswith(b"\x89PNG\r\n") and png.stat().st_size > 2000
