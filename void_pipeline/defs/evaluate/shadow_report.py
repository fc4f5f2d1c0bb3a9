"""shadow_report: a day of the shadow run scored as evaluation scores held-out threads, its trend across days, the
worst pairs for review, and a warning when the candidate falls below the served model."""

import json
from typing import Any

import dagster as dg
from pydantic import Field

from void_pipeline.defs.agent import recorded_agent
from void_pipeline.defs.automation import WHEN_INPUTS_CHANGE
from void_pipeline.defs.evaluate.assets import authorship
from void_pipeline.defs.evaluate.shadow_days import shadow_days
from void_pipeline.defs.external import run_external
from void_pipeline.defs.metadata import OWNERS, as_metadata
from void_pipeline.lib.evaluate import shadow_report as shadow
from void_pipeline.lib.layout import RunPaths, ShadowDayPaths
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer


class ShadowReportConfig(dg.Config):
    similarity: bool = Field(
        default=True,
        description="measure semantic similarity to the real replies in the trainer environment (Pipes); off: the "
        "worst pairs are ranked by word overlap",
    )
    worst_pairs: int = Field(default=10, description="pairs shown for review, least close to the real reply first")
    seed: int = Field(default=0, description="the authorship classifier's")


CHECK_DESCRIPTION = (
    "Warning: the candidate is not below the served model (production) on the day's headline measures: call "
    "validity, authorship pass share, semantic similarity to the real replies. Passes saying so when there is no "
    "candidate or nothing to compare."
)


@dg.asset(
    deps=["shadow_replies"],
    partitions_def=shadow_days,
    group_name="evaluate",
    owners=OWNERS,
    kinds={"scikitlearn"},
    check_specs=[
        dg.AssetCheckSpec("candidate_not_below_production", asset="shadow_report", description=CHECK_DESCRIPTION)
    ],
    description="A day of real agent replies beside the served model's and the candidate's answers: evaluation's "
    "metrics on live data, the trend across days, the worst pairs; skipped and empty days say why.",
    automation_condition=WHEN_INPUTS_CHANGE,
)
def shadow_report(
    context: dg.AssetExecutionContext,
    config: ShadowReportConfig,
    storage: PipelineStorage,
    trainer: Trainer,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> Any:
    record, layout = recorded_agent(storage)
    paths = layout.shadow.day(context.partition_key)
    try:
        day = shadow.read_day(paths)
    except shadow.ShadowInputMissing as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    classifier, not_measured = None, dict[str, str]()
    if day.answered:
        dataset = shadow.served_dataset(day.settings, layout.serve)
        why_not: str | None = "no training dataset of the served bundle is known"
        if dataset:
            classifier, why_not = authorship(context, dataset, layout, record.did, config.seed)
        if why_not:
            not_measured["authorship"] = why_not
    measured = similarity(context, pipes_subprocess_client, trainer, paths, day) if config.similarity else {}
    if day.answered and not measured:
        not_measured["similarity"] = "off (config similarity: false)" if not config.similarity else "see the log"
    report = shadow.build_shadow_report(
        day, classifier, measured.get("similarity"), measured.get("cosines"), config.worst_pairs
    )
    shadow.write_shadow_report(report, day, paths)
    trend = shadow.trend_frame(layout.shadow, day.day)
    shadow.trend_plot(trend, paths.trend_plot)
    context.log.info(report.markdown())
    yield dg.MaterializeResult(metadata=as_metadata(shadow.shadow_metadata(report, paths, trend, not_measured)))
    passed, why, numbers = shadow.candidate_verdict(report)
    yield dg.AssetCheckResult(
        check_name="candidate_not_below_production",
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"why": why, **numbers},
    )


def similarity(
    context: dg.AssetExecutionContext,
    client: dg.PipesSubprocessClient,
    trainer: Trainer,
    paths: ShadowDayPaths,
    day: shadow.ShadowDay,
) -> dict[str, Any]:
    """The similarity of each answer to its real reply, measured in the trainer environment through Pipes (the step
    eval_report uses, without the held-out loss): ``similarity`` per model and ``cosines`` per (example, model,
    sample). {} when the day has no answers or the step measured nothing."""
    if not day.answered:
        return {}
    keys = shadow.similarity_inputs(day, paths.similarity_answers)
    paths.model_measures.unlink(missing_ok=True)
    extras = {"answers": str(paths.similarity_answers), "output": str(paths.model_measures)}
    run_external(context, client, trainer, "void_pipeline.external.evaluate_models", RunPaths(paths.root), extras)
    if not paths.model_measures.exists():
        return {}
    measured = json.loads(paths.model_measures.read_text())
    if not measured.get("similarity"):
        context.log.warning(f"semantic similarity not measured: {measured.get('similarity_error')}")
        return {}
    return {"similarity": measured["similarity"], "cosines": dict(zip(keys, measured["cosines"], strict=True))}
