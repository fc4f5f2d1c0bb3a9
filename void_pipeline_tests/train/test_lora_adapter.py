"""lora_adapter and merged_model as Dagster assets: real axolotl through Pipes, metrics in Dagster and MLflow,
a registered adapter, a merged standalone model, resume after a kill, and bad inputs refused before training."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import orjson
import pytest

from void_pipeline.defs.train.assets import lora_adapter, merged_model
from void_pipeline.lib.training import dataset_hash, read_metrics, read_state
from void_pipeline.resources.model import BaseModel
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer
from void_pipeline_tests.train.conftest import run_trainer


def materialize(
    curated: dict[str, Any],
    tiny_model: Path | str,
    trainer_bin: Path,
    overrides: dict[str, Any],
    *,
    instance: dg.DagsterInstance | None = None,
    storage: PipelineStorage | None = None,
    assets: tuple[dg.AssetsDefinition, ...] = (lora_adapter,),
) -> dg.ExecuteInProcessResult:
    resources = {
        **curated["resources"],
        "base_model": BaseModel(local_path=str(tiny_model), sequence_len=4096),
        "trainer": Trainer(overlays=["cpu-tiny"], overrides=overrides, python=str(trainer_bin / "python")),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        **({"storage": storage} if storage else {}),
    }
    return dg.materialize(
        [*curated["assets"], lora_adapter, merged_model],
        selection=[a.key for a in assets],
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )


def value(metadata: Any, key: str) -> Any:
    return metadata[key].value


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "the run was expected to fail"
    error = failures[0].step_failure_data.error
    return "\n".join(
        filter(None, [error.message if error else "", str(failures[0].step_failure_data.user_failure_data)])
    )


def mlflow_run(curated: dict[str, Any], dagster_run_id: str) -> Any:
    store = Path(curated["storage"].root) / "mlflow"
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["void-lora"], output_format="list")
    return next(r for r in runs if r.data.tags.get("dagster_run_id") == dagster_run_id)


def test_the_adapter_trains_learns_is_tracked_registered_and_merged(
    curated: dict[str, Any], tiny_model: Path, trainer_bin: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    overrides = {"max_steps": 12, "save_steps": 6}
    result = materialize(
        curated, tiny_model, trainer_bin, overrides, instance=instance, assets=(lora_adapter, merged_model)
    )
    assert result.success, failure_text(result)
    meta = result.asset_materializations_for_node("lora_adapter")[0].metadata
    adapter = Path(str(value(meta, "adapter_path")))
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0 and value(meta, "steps") == 12
    assert value(meta, "base_model") == str(tiny_model) and "| 12 |" in str(value(meta, "loss_curve"))
    # a real learning signal on the held-out validation split, measured by axolotl before and after training
    assert value(meta, "val_rows") > 0
    assert value(meta, "val_loss_after") < value(meta, "val_loss_before")
    assert 0 < value(meta, "packing_efficiency") <= 1 and value(meta, "tokens_per_second") > 0
    assert Path(str(value(meta, "loss_plot"))).read_text().startswith("<svg")
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("step 12: loss" in m for m in messages)  # the external process's progress, in Dagster's log
    assert any("validation at step 0" in m for m in messages)

    run = mlflow_run(curated, result.run_id)
    assert run.data.params["base_model"] == str(tiny_model) and run.data.params["max_steps"] == "12"
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(1, 13))
    assert len(client.get_metric_history(run.info.run_id, "eval_loss")) >= 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in artifacts
    assert "axolotl.yml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    version = client.get_model_version("void-lora", str(value(meta, "registered_model")).split(" v")[-1])
    storage: PipelineStorage = curated["storage"]
    dataset = next(Path(storage.root).glob("ingest/*/curate/chat_dataset/openai"))
    assert version.run_id == run.info.run_id and version.tags["dataset_sha256"] == dataset_hash(dataset)
    assert version.tags["config_fingerprint"] == read_state(adapter.parent)["fingerprint"]

    merged = Path(str(result.asset_materializations_for_node("merged_model")[0].metadata["merged_path"].value))
    assert merged == adapter.parent / "merged" and not (adapter.parent / ".merging").exists()
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

    again = materialize(curated, tiny_model, trainer_bin, overrides)
    assert again.success, failure_text(again)
    second = Path(str(again.asset_materializations_for_node("lora_adapter")[0].metadata["adapter_path"].value))
    assert second != adapter and (adapter / "adapter_model.safetensors").exists()  # a finished adapter is kept


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


def test_a_killed_training_resumes_from_its_last_checkpoint(
    curated: dict[str, Any], tiny_model: Path, trainer_bin: Path
) -> None:
    overrides = {"max_steps": 8, "save_steps": 2, "seed": 7}
    storage: PipelineStorage = curated["storage"]
    outcome: dict[str, dg.ExecuteInProcessResult] = {}
    worker = threading.Thread(
        target=lambda: outcome.update(first=materialize(curated, tiny_model, trainer_bin, overrides))
    )
    worker.start()
    deadline, killed, checkpoint = time.monotonic() + 400, list[int](), None
    while worker.is_alive() and time.monotonic() < deadline and not killed:
        for state in Path(storage.root).glob("ingest/*/train/*/adapter/checkpoint-2/trainer_state.json"):
            run_dir = state.parents[2]
            config = run_dir / "axolotl.yml"
            if "seed: 7" in config.read_text() and (pids := trainer_processes(config)):
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                killed, checkpoint = pids, state.parent
        time.sleep(0.2)
    worker.join(timeout=120)
    assert killed and checkpoint is not None, "training never reached its first checkpoint"
    first = outcome["first"]
    assert not first.success and "train" in failure_text(first)
    run_dir = checkpoint.parents[1]
    assert read_state(run_dir)["status"] == "failed"

    resumed = materialize(curated, tiny_model, trainer_bin, overrides)
    assert resumed.success, failure_text(resumed)
    meta = resumed.asset_materializations_for_node("lora_adapter")[0].metadata
    assert Path(str(value(meta, "run_dir"))) == run_dir  # the same folder, picked up where it stopped
    assert value(meta, "resumed_from").startswith("checkpoint-") and value(meta, "resumed_at_step") >= 2
    assert value(meta, "steps") == 8
    assert [e["step"] for e in read_metrics(run_dir) if e["kind"] == "train"] == list(range(1, 9))
    assert read_state(run_dir)["dagster_runs"] == [first.run_id, resumed.run_id]
    assert mlflow_run(curated, resumed.run_id).data.tags["resumed_from"] == value(meta, "resumed_from")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_base_model", "base model path /nonexistent/llama does not exist"),
        ("sequence_len", "sequence_len 64 is below every training example"),
        ("output_collision", "output directory collision"),
        ("unknown_key", "config: unknown config key: lora_rank"),
        ("no_trainable_examples", "no trainable examples"),
    ],
)
def test_bad_inputs_fail_before_training_with_a_clear_message(
    case: str,
    expected: str,
    curated: dict[str, Any],
    tiny_model: Path,
    trainer_bin: Path,
    tmp_path: Path,
) -> None:
    model: Path | str = tiny_model
    overrides: dict[str, Any] = {"max_steps": 2}
    storage = None
    if case == "missing_base_model":
        model = "/nonexistent/llama"
    elif case == "sequence_len":
        overrides["sequence_len"] = 64
    elif case == "output_collision":
        (tmp_path / "earlier").mkdir()
        (tmp_path / "earlier" / "adapter_model.safetensors").write_bytes(b"an earlier adapter")
        overrides["output_dir"] = str(tmp_path / "earlier")
    elif case == "unknown_key":
        overrides["lora_rank"] = 8
    else:  # a dataset whose rows hold no assistant turn
        storage = PipelineStorage(root=str(tmp_path / "data"))
        source = next(Path(curated["storage"].root).glob("ingest/*/curate/chat_dataset/openai"))
        target = tmp_path / "data" / source.relative_to(curated["storage"].root)
        target.mkdir(parents=True)
        rows = [orjson.loads(line) for line in (source / "train.jsonl").read_bytes().splitlines()]
        stripped = [{**r, "messages": [m for m in r["messages"] if m["role"] != "assistant"]} for r in rows]
        (target / "train.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in stripped) + b"\n")
    started = time.monotonic()
    result = materialize(curated, model, trainer_bin, overrides, storage=storage)
    text = failure_text(result)
    assert expected in text, text
    assert time.monotonic() - started < 120  # refused at the checks, not after a training run
    root = Path((storage or curated["storage"]).root)
    assert not list(root.glob(f"ingest/*/train/{result.run_id}/adapter/adapter_model.safetensors"))
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
    history = read_metrics(tmp_path)
    assert [(e["kind"], e["step"]) for e in history] == [("eval", 0), ("train", 1), ("train", 2)]
    assert history[-1]["loss"] == 7.0
