"""MLflow as its UI reads it (lib/train/tracking.py), on a real SQLite store: a classic training experiment, the
training run filed under training runs (a logged model as its output, the dataset as its input), the evaluation on
the same run and version, and links that open the classic view."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from void_pipeline.lib.train import tracking

SHA256 = (
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"  # a real hash is longer than a digest may be
)


def test_a_training_is_a_classic_training_run_and_its_evaluation_links_to_run_and_version(tmp_path: Path) -> None:
    store, uri = tmp_path / "mlflow", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    store.mkdir()
    dataset, adapter, config = tmp_path / "chat_dataset" / "openai", tmp_path / "adapter", tmp_path / "axolotl.yml"
    dataset.mkdir(parents=True)
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    config.write_text("base_model: tiny\n")
    tracked = tracking.log_training(
        uri,
        store,
        run_name="lora-test",
        config={"base_model": "tiny", "adapter": "lora", "lora_r": 8},
        config_path=config,
        output_dir=adapter,
        history=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}],
        summary={},
        tags={"dataset_sha256": SHA256},
        registered_model="void-lora-test",
        dataset=dataset,
    )
    client = MlflowClient(uri)
    assert client.get_experiment(tracked.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    # what the UI's experiment page asks for (search runs): a run with a model output is a training run
    (run,) = client.search_runs([tracked.experiment_id])
    assert run.outputs is not None and run.inputs is not None
    (output,) = run.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert output.step == 2 and logged.source_run_id == run.info.run_id and logged.params["lora_r"] == "8"
    (used,) = run.inputs.dataset_inputs
    assert SHA256.startswith(used.dataset.digest) and dataset.as_uri() in used.dataset.source
    assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == "training"
    version = client.get_model_version("void-lora-test", tracked.model_version)
    assert version.tags["logged_model"] == output.model_id and str(version.source).endswith("/adapter")

    evaluated = tracking.record_evaluation(
        uri, run.info.run_id, "void-lora-test", tracked.model_version, {"call_validity": 0.75}, [], "candidate"
    )
    assert evaluated.experiment_id == tracked.experiment_id
    assert client.get_run(run.info.run_id).data.metrics["eval/call_validity"] == 0.75
    assert evaluated.link() == (
        f"http://127.0.0.1:5000/#/experiments/{tracked.experiment_id}/runs/{run.info.run_id}"
        "?workflowType=machine_learning"
    )
    assert evaluated.version_link("http://mlflow.internal:5000/") == (
        f"http://mlflow.internal:5000/#/models/void-lora-test/versions/{tracked.model_version}"
        "?workflowType=machine_learning"
    )
    assert str(client.get_registered_model("void-lora-test").aliases["candidate"]) == tracked.model_version


def test_links_point_at_a_tracking_server_itself_and_quote_the_model_name() -> None:
    link = tracking.model_version_link("https://mlflow.example.org/", "void lora/a", 3)
    assert link == "https://mlflow.example.org/#/models/void%20lora%2Fa/versions/3?workflowType=machine_learning"
    run = tracking.TrackedRun("r1", "7", "file:///tmp/mlruns", "m", "1")
    assert run.link(page="model-metrics").endswith(
        "/#/experiments/7/runs/r1/model-metrics?workflowType=machine_learning"
    )
    assert run.link().startswith(tracking.LOCAL_MLFLOW_UI)  # a file store: the UI make mlflow-ui serves
