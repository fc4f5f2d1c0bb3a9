"""What a finished training shows in the UI: plain values (defs/metadata.as_metadata shows them)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from void_pipeline.lib.model import ChosenModel
from void_pipeline.lib.report import Markdown, Url
from void_pipeline.lib.train.runs import TrainingPlan, TrainingSummary, train_examples


def plot_markdown(plot: Path, title: str = "loss") -> Markdown:
    """The plot itself in the UI (a PNG inline, as Dagster's markdown renders it), with where it lies."""
    if not plot.exists():
        return Markdown("_no plot_")
    image = base64.b64encode(plot.read_bytes()).decode()
    return Markdown(f"![{title}](data:image/png;base64,{image})\n\n`{plot}`")


def training_metadata(
    plan: TrainingPlan, chosen: ChosenModel, summary: TrainingSummary, ui_url: str | None, settings: dict[str, str]
) -> dict[str, Any]:
    tracked = summary.tracked
    return {
        "run_dir": plan.run.root,
        "base_model": str(plan.config["base_model"]),
        "config": chosen.config,
        "overlays": ", ".join(chosen.overlays) or "none",
        "final_loss": summary.final_loss,
        "val_loss_before": summary.val_loss_before,
        "val_loss_after": summary.val_loss_after,
        "loss_curve": Markdown(summary.history.curve_markdown()),
        "loss_plot": plot_markdown(summary.plot),
        "effective_config": plan.run.config,
        "dataset_sha256": plan.data_hash,
        "dataset_train_examples": train_examples(plan.dataset),  # retrain_on_growth compares against it
        "training_set": plan.run.training_set,  # example ids and source URIs: the deletion checks count against it
        "source_uris_sha256": (summary.training_set and summary.training_set.digest) or "none: no source URIs",
        "source_uris": summary.training_set.uris if summary.training_set else 0,
        "resumed_from": plan.resumed.checkpoint.name if plan.resumed else "none",
        "mlflow_run": Url(tracked.link(ui_url)),
        "loss_chart": Url(tracked.link(ui_url, "model-metrics")),
        "mlflow_run_id": tracked.run_id,
        "registered_model": f"{tracked.model_name} v{tracked.model_version}",
        "mlflow_model_version": Url(tracked.version_link(ui_url)),
        "settings": settings or {"none": "no VOID_* variable set: defaults"},
    }
