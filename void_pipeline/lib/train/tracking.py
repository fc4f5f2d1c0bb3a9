"""MLflow: one run per training (params, per-step metrics, the effective config, the adapter as its logged model,
the dataset as its input) in a classic machine-learning experiment, and a registered model version per adapter,
tagged with the dataset hash and the config fingerprint.

The store defaults to SQLite under the pipeline's data folder (``<data>/mlflow/mlflow.db``, artifacts beside
it); any tracking URI (an MLflow server) works instead. Open the local one with ``make mlflow-ui``
(http://127.0.0.1:5000, where the asset metadata's links point unless VOID_MLFLOW_UI_URL says otherwise).
"""

from __future__ import annotations

import re
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import LoggedModelOutput
from mlflow.tracking import MlflowClient

EXPERIMENT = "void-lora"
# MLflow 3's UI shows an experiment as "GenAI apps & agents" unless told otherwise: the experiment's kind tag (the
# UI's kind selector reads and writes it) and the ``workflowType`` of every link written here (the 3.x UI takes its
# mode from the URL, else from the browser's last choice) say "machine learning": runs open as classic training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
CLASSIC_VIEW = "workflowType=machine_learning"
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
        return f"{url}/{page}?{CLASSIC_VIEW}" if page else f"{url}?{CLASSIC_VIEW}"

    def version_link(self, ui_url: str | None = None) -> str:
        return model_version_link(self.tracking_uri, self.model_name, self.model_version, ui_url)


def model_version_link(tracking_uri: str, model_name: str, version: str | int, ui_url: str | None = None) -> str:
    """A registered model version's page in the MLflow UI that shows ``tracking_uri``'s store."""
    name = urllib.parse.quote(model_name, safe="")
    return f"{ui_base(tracking_uri, ui_url)}/#/models/{name}/versions/{version}?{CLASSIC_VIEW}"


def training_experiment(client: MlflowClient, store: Path) -> str:
    """The trainings' experiment, created as a classic (not GenAI) one; one made before its kind was set gets it."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        artifacts = (store / "artifacts").as_uri()
        return client.create_experiment(EXPERIMENT, artifacts, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return str(experiment.experiment_id)


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
    dataset: Path | None = None,
) -> TrackedRun:
    """Log a finished training and register its adapter as a new version of ``registered_model``. The run is filed
    as a training run: the dataset it trained on is its input (``training``), the adapter its logged model."""
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = training_experiment(client, store)
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
        if dataset is not None:
            mlflow.log_input(training_input(dataset, tags.get("dataset_sha256")), context="training")
        logged_model = log_adapter_model(client, run.info.run_id, config, artifact_uri, history)
    if not _registered(client, registered_model):
        client.create_registered_model(registered_model, description="void's LoRA adapters, one version per training")
    version = client.create_model_version(
        registered_model,
        source=artifact_uri,
        run_id=run.info.run_id,
        tags={**tags, "logged_model": logged_model},
        description=f"adapter of {config.get('base_model')}; effective config: axolotl.yml in the run's artifacts",
    )
    return TrackedRun(run.info.run_id, experiment_id, uri, registered_model, str(version.version))


DIGEST_CHARS = 12  # of the dataset's sha256: MLflow stores a digest of at most 36 characters


def training_input(dataset: Path, sha256: str | None) -> MetaDataset:
    """The chat dataset as a run input: where it lies and the start of its hash (no rows are copied into MLflow; the
    whole hash is the run's ``dataset_sha256`` tag)."""
    with warnings.catch_warnings():  # MLflow registers its local source under two schemes and warns that it chose
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
        source = resolve_dataset_source(dataset.resolve().as_uri())
    name = f"{dataset.parent.name}/{dataset.name}"
    return MetaDataset(source, name=name, digest=sha256[:DIGEST_CHARS] if sha256 else None)  # type: ignore[abstract]  # MLflow's own class; not an ABC


def log_adapter_model(
    client: MlflowClient, run_id: str, config: dict[str, Any], artifact_uri: str, history: list[dict[str, Any]]
) -> str:
    """The adapter as the run's logged model (MLflow 3 files a run with a model output under training runs): an
    external model whose files are the run's ``adapter/`` artifacts, with the LoRA settings as its params."""
    params = {k: str(config[k]) for k in ("base_model", "adapter", "lora_r", "lora_alpha") if config.get(k) is not None}
    model = mlflow.create_external_model(
        name="adapter", source_run_id=run_id, params=params, model_type="lora-adapter", tags={"files": artifact_uri}
    )
    last_step = max((int(entry["step"]) for entry in history), default=0)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, last_step)])
    return str(model.model_id)


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
) -> TrackedRun:
    """An evaluation of a tracked training: its metrics (``eval/<name>``) and files (``evaluation/``) on the
    training's run; the headline metrics as tags of the registered model version, which gets ``alias`` (an alias
    names one version at a time; a version evaluated again as ``candidate`` loses ``champion``). Returns the run and
    version, for links to them."""
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    with mlflow.start_run(run_id=run_id) as run:
        mlflow.log_metrics(mlflow_metrics({f"eval/{k}": v for k, v in headline.items()}))
        for path in artifacts:
            if path.exists():
                mlflow.log_artifact(str(path), artifact_path="evaluation")
    tracked = TrackedRun(run_id, run.info.experiment_id, uri, registered_model, str(model_version or ""))
    if model_version is None:
        return tracked
    for name, value in headline.items():
        client.set_model_version_tag(registered_model, str(model_version), f"eval.{name}", f"{value:.4g}")
    client.set_model_version_tag(registered_model, str(model_version), "eval.gates", alias)
    client.set_registered_model_alias(registered_model, alias, str(model_version))
    champion = client.get_registered_model(registered_model).aliases.get("champion")
    if alias != "champion" and str(champion) == str(model_version):  # this version no longer passes
        client.delete_registered_model_alias(registered_model, "champion")
    return tracked


def set_alias(uri: str, registered_model: str, version: str, alias: str) -> None:
    """Point ``alias`` (e.g. ``production``) at a registered model version."""
    MlflowClient(tracking_uri=uri).set_registered_model_alias(registered_model, alias, version)
