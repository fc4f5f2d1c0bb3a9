"""eval_generations, eval_report and served_model on the session's curated world and trained adapter, through a
real vLLM server: every held-out answer of both models, a report with gates, MLflow updated, and an adapter that
makes no valid reply call (the session's tiny model writes none) stopped by the gates in the same run and the next:
never promoted, never aliased, whatever the thresholds. The promotion itself runs in `make demo`, whose tiny model
is pretrained as an instruct stand-in and makes valid calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from void_pipeline.defs.evaluate.assets import eval_generations, eval_report
from void_pipeline.defs.serve.assets import served_model
from void_pipeline.lib.layout import EvaluationPaths
from void_pipeline.lib.train.tracking import default_uri
from void_pipeline.resources.server import InferenceServer
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer
from void_pipeline_tests.support.runs import failure_text
from void_pipeline_tests.support.trainer import Trained

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet

GENERATION = {"limit": 5, "max_tokens": 48, "max_posts": 2, "concurrency": 4, "seed": 3}


def run(
    curated: dict[str, Any], trainer_bin: Path, selection: list[dg.AssetsDefinition], report: dict[str, Any]
) -> Any:
    resources = {
        **curated["resources"],
        "server": InferenceServer(cpu=True, max_model_len=4096),
        "trainer": Trainer(python=str(trainer_bin / "python")),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }
    config = {"ops": {"eval_generations": {"config": GENERATION}, "eval_report": {"config": report}}}
    return dg.materialize(
        [eval_generations, eval_report, served_model],
        selection=[a.key for a in selection],
        resources=resources,
        run_config={"ops": {k: v for k, v in config["ops"].items() if k in {a.key.path[-1] for a in selection}}},
        raise_on_error=False,
    )


def test_held_out_threads_are_answered_reported_tracked_and_gated(
    curated: dict[str, Any], trained: Trained, trainer_bin: Path
) -> None:
    storage: PipelineStorage = curated["storage"]
    # The demo's lenient gates: as low as a gate goes, yet "some valid calls" (a threshold of 0 is refused below)
    lenient = {"min_call_validity": 0.04, "max_character_sheet_per_1000": 1000.0, "review_threads": 4}
    result = run(curated, trainer_bin, [eval_generations, eval_report, served_model], lenient)
    assert not result.success  # the gate stopped served_model in the run that evaluated

    generated = result.asset_materializations_for_node("eval_generations")[0].metadata
    assert generated["answers"].value == 10 and generated["errors"].value == 0
    paths = EvaluationPaths(Path(str(generated["folder"].value)))
    rows = pl.read_parquet(paths.generations)
    assert sorted(set(rows["model"])) == ["base", "tuned"] and rows.height == 10
    assert rows["steps"].min() >= 1 and rows["completion_tokens"].sum() > 0  # type: ignore[operator]
    settings = json.loads(paths.settings.read_text())
    assert settings["sampling"]["seed"] == 3 and len(settings["examples"]) == 5

    report = json.loads(paths.report.read_text())
    assert set(report["scores"]) == {"base", "tuned", "real"}
    assert report["scores"]["real"]["call_validity"] == 1.0  # the agent's own replies are valid calls
    assert report["scores"]["tuned"]["call_validity"] == 0.0  # a 2-layer random model: no valid call
    assert report["blocking"]["tool_call_validity"]["passed"] is False
    base, tuned = report["scores"]["base"]["heldout_loss"], report["scores"]["tuned"]["heldout_loss"]
    assert tuned < base, (base, tuned)  # the adapter is applied, and it learned the agent's answers
    # similarity is reported for exactly the models that answered with a post (here none: the tiny model makes no
    # valid call), never made up for the others; its measure is tested in test_semantic_similarity
    answered = {m for m, posts in rows.select("model", "posts").iter_rows() if posts}
    assert {m for m, s in report["scores"].items() if "semantic_similarity" in s} == answered, answered
    assert all(-1 <= report["scores"][model]["semantic_similarity"] <= 1 for model in answered)
    for name in ("report.md", "lengths.png", "metrics.png"):
        assert (paths.root / name).stat().st_size > 0
    pack, key = (json.loads((paths.review / name).read_text()) for name in ("pack.json", "key.json"))
    assert len(pack["items"]) == 4 and (key["evaluation"], key["digest"]) == (paths.root.name, pack["digest"])
    assert all(sorted(labels.values()) == ["base", "tuned"] for labels in key["items"].values())
    assert all(f"**{label}.**" in (paths.review / "review.md").read_text() for label in ("real", "1", "2"))
    assert (paths.review / "review.csv").read_text().splitlines()[0] == "item,example_id,thread,real,1,2"
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["tool_call_validity"] is False and checks["character_sheet_rate"]
    assert not result.asset_materializations_for_node("served_model")
    serve = storage.agent_layout.serve
    assert serve.versions() == [] and not serve.current.exists()  # nothing promoted

    client = MlflowClient(default_uri(storage.layout.mlflow))
    latest = storage.agent_layout.train.read_latest()
    assert latest is not None
    aliases = client.get_registered_model("void-lora").aliases
    assert str(aliases.get("candidate")) == str(latest.model_version)  # evaluated, not a champion
    assert "champion" not in aliases and "production" not in aliases
    version = client.get_model_version("void-lora", str(latest.model_version))
    assert float(version.tags["eval.call_validity"]) == 0.0
    artifacts = [a.path for a in client.list_artifacts(str(latest.mlflow_run), "evaluation")]
    assert "evaluation/report.json" in artifacts
    # what the UI shows: the threads as a table, numbers named with their unit, links to the run and the version
    shown = result.asset_materializations_for_node("eval_report")[0].metadata
    table = shown["threads"]
    assert isinstance(table, dg.TableMetadataValue) and len(table.records) == 5
    assert not any(r.data["tuned_valid"] for r in table.records)  # no valid call, as the scores say
    assert isinstance(shown["tuned_call_validity_share"], dg.FloatMetadataValue)
    assert shown["tuned_call_validity_share"].value == 0.0
    assert isinstance(shown["mlflow_run"], dg.UrlMetadataValue) and str(latest.mlflow_run) in str(
        shown["mlflow_run"].value
    )
    assert str(shown["mlflow_model_version"].value).split("?")[0].endswith(f"/versions/{latest.model_version}")
    gate = next(c for c in result.get_asset_check_evaluations() if c.check_name == "tool_call_validity")
    assert (gate.metadata["min_share"].value, gate.metadata["measured_share"].value) == (0.04, 0.0)

    alone = run(curated, trainer_bin, [served_model], lenient)  # a later run, whatever launched it, is refused too
    assert not alone.success and "did not pass its blocking gates" in failure_text(alone)
    assert "tool_call_validity" in failure_text(alone) and serve.versions() == []
    never = run(curated, trainer_bin, [eval_report], {**lenient, "min_call_validity": 0.0})
    assert not never.success and "min_call_validity 0.0 would serve a model that never" in failure_text(never)

    aside = paths.generations.rename(paths.root / "aside.parquet")  # the generations file lost: one line, no trace
    try:
        missing = run(curated, trainer_bin, [eval_report], lenient)
        assert not missing.success and f"no generations in {paths.root}" in failure_text(missing)
    finally:
        aside.rename(paths.generations)
