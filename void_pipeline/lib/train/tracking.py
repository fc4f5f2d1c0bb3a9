"""MLflow: one run per training (params, per-step metrics, the effective config, the adapter) and a registered
model version per adapter, tagged with the dataset hash and the config fingerprint.

The store defaults to SQLite under the pipeline's data folder (``<data>/mlflow/mlflow.db``, artifacts beside
it); any tracking URI (an MLflow server) works instead. Open the local one with ``make mlflow-ui``
(http://127.0.0.1:5000, where the asset metadata's links point unless VOID_MLFLOW_UI_URL says otherwise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

EXPERIMENT = "void-lora"
LOGGED_PARAMS = (
    "base_model",
    "adapter",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "sequence_len",
    "sample_packing",
    "micro_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "num_epochs",
    "max_steps",
    "optimizer",
    "lr_scheduler",
)


def default_uri(store: Path) -> str:
    """The local store (``DataLayout.mlflow``): SQLite, artifacts beside it."""
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def mlflow_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics under names MLflow accepts ("memory/max_active (GiB)" → "memory/max_active _GiB_")."""
    return {
        re.sub(r"[^\w\-. :/]", "_", k): float(v)
        for k, v in metrics.items()
        if k not in {"step", "kind"} and isinstance(v, int | float)
    }


# Where `make mlflow-ui` serves the local store's UI; VOID_MLFLOW_UI_URL names another.
LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"


def ui_base(tracking_uri: str, configured: str | None = None) -> str:
    """The MLflow UI that shows this store's runs: the configured one, the tracking server itself, or the local
    UI over a file or SQLite store."""
    if configured:
        return configured.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return LOCAL_MLFLOW_UI


@dataclass(frozen=True)
class TrackedRun:
    run_id: str
    experiment_id: str
    tracking_uri: str
    model_name: str
    model_version: str

    def link(self, ui_url: str | None = None, page: str = "") -> str:
        """The run's page in the MLflow UI (``page``: a tab of it, e.g. ``model-metrics`` for the charts)."""
        url = f"{ui_base(self.tracking_uri, ui_url)}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return f"{url}/{page}" if page else url


def log_training(
    uri: str,
    store: Path,
    *,
    run_name: str,
    config: dict[str, Any],
    config_path: Path,
    output_dir: Path,
    history: list[dict[str, Any]],
    summary: dict[str, float],
    tags: dict[str, str],
    registered_model: str,
    plot: Path | None = None,
) -> TrackedRun:
    """Log a finished training and register its adapter as a new version of ``registered_model``."""
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else mlflow.create_experiment(EXPERIMENT, artifact_location=(store / "artifacts").as_uri())
    )
    client = MlflowClient(uri)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params({k: config.get(k) for k in LOGGED_PARAMS if k in config})
        mlflow.set_tags(tags)
        for entry in history:
            mlflow.log_metrics(mlflow_metrics(entry), step=int(entry["step"]))
        if summary:
            mlflow.log_metrics(mlflow_metrics(summary))
        mlflow.log_artifact(str(config_path))
        if plot is not None and plot.exists():
            mlflow.log_artifact(str(plot))
        adapter_files = [p for p in output_dir.iterdir() if p.is_file()] if output_dir.exists() else []
        for path in adapter_files:  # the adapter, not the checkpoints
            mlflow.log_artifact(str(path), artifact_path="adapter")
        artifact_uri = f"{run.info.artifact_uri}/adapter"
    if not _registered(client, registered_model):
        client.create_registered_model(registered_model, description="void's LoRA adapters, one version per training")
    version = client.create_model_version(
        registered_model,
        source=artifact_uri,
        run_id=run.info.run_id,
        tags=tags,
        description=f"adapter of {config.get('base_model')}; effective config: axolotl.yml in the run's artifacts",
    )
    return TrackedRun(run.info.run_id, experiment_id, uri, registered_model, version.version)


def _registered(client: MlflowClient, name: str) -> bool:
    return bool(client.search_registered_models(filter_string=f"name = '{name}'"))


def record_evaluation(
    uri: str,
    run_id: str,
    registered_model: str,
    model_version: str | None,
    headline: dict[str, float],
    artifacts: list[Path],
    alias: str,
) -> None:
    """An evaluation of a tracked training: its metrics (``eval/<name>``) and files (``evaluation/``) on the
    training's run; the headline metrics as tags of the registered model version, which gets ``alias`` (an alias
    names one version at a time; a version evaluated again as ``candidate`` loses ``champion``)."""
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(mlflow_metrics({f"eval/{k}": v for k, v in headline.items()}))
        for path in artifacts:
            if path.exists():
                mlflow.log_artifact(str(path), artifact_path="evaluation")
    if model_version is None:
        return
    for name, value in headline.items():
        client.set_model_version_tag(registered_model, str(model_version), f"eval.{name}", f"{value:.4g}")
    client.set_model_version_tag(registered_model, str(model_version), "eval.gates", alias)
    client.set_registered_model_alias(registered_model, alias, str(model_version))
    champion = client.get_registered_model(registered_model).aliases.get("champion")
    if alias != "champion" and str(champion) == str(model_version):  # this version no longer passes
        client.delete_registered_model_alias(registered_model, "champion")


def set_alias(uri: str, registered_model: str, version: str, alias: str) -> None:
    """Point ``alias`` (e.g. ``production``) at a registered model version."""
    MlflowClient(tracking_uri=uri).set_registered_model_alias(registered_model, alias, version)
