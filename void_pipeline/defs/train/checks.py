"""Warnings that an adapter learned from posts deleted since it was trained: one on lora_adapter (the latest
adapter), one on served_model (the current bundle's adapter). Both count the run folder's training set against the
deletions ledger, so they run again — without retraining — whenever ingest may have added to the ledger
(raw_records: the agent's own deletions; thread_context's re-check: other people's), and an operator can execute
them alone from the UI."""

from pathlib import Path

import dagster as dg

from void_pipeline.defs.agent import recorded_agent
from void_pipeline.defs.ingest.assets import raw_records, thread_context
from void_pipeline.defs.train.assets import lora_adapter
from void_pipeline.lib.handoffs import HandoffError
from void_pipeline.lib.layout import IngestPaths, RunPaths
from void_pipeline.lib.serve.bundle import BundleError, current_bundle
from void_pipeline.lib.train.training_set import URIS_SHOWN, deleted_since
from void_pipeline.resources.storage import PipelineStorage

SERVED_MODEL = dg.AssetKey("served_model")  # by key: serving lives in its own stage


def when_ledger_changes(checked: dg.AssetKey) -> dg.AutomationCondition:
    """After ingest materialized (the ledger may have grown), once the checked asset exists; the checked asset's
    own materialization runs its checks in its own run."""
    own = dg.AssetSelection.assets(checked)
    return (
        dg.AutomationCondition.any_deps_updated().ignore(own)
        & ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.missing()).allow(own)
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after ingest, once the adapter exists")


def deletions_result(training_set: Path | None, ingest: IngestPaths, nothing: str) -> dg.AssetCheckResult:
    """The check's verdict: passed when no example of the training set shows or answers with a deleted post."""
    if training_set is None or not training_set.exists():
        note = nothing if training_set is None else f"{training_set} is missing: trained before training sets were kept"
        return dg.AssetCheckResult(passed=True, metadata={"deleted_examples": 0, "note": note})
    found = deleted_since(training_set, ingest)
    return dg.AssetCheckResult(
        passed=found.examples == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=found.summary(),
        metadata={
            "deleted_examples": found.examples,
            "training_examples": found.training_examples,
            "by_reason": found.by_reason or {"none": 0},
            "deleted_uris": found.uris[:URIS_SHOWN],
            "deleted_uris_total": len(found.uris),
            "training_set": dg.MetadataValue.path(str(training_set)),
        },
    )


@dg.asset_check(
    asset=lora_adapter,
    additional_deps=[raw_records, thread_context],
    automation_condition=when_ledger_changes(lora_adapter.key),
    description="N examples of this adapter's training set were deleted since (their own post, a thread post or a "
    "quote they show is in the deletions ledger); warns, retraining forgets them.",
)
def lora_adapter_deleted_examples(storage: PipelineStorage) -> dg.AssetCheckResult:
    layout = recorded_agent(storage)[1]
    try:
        latest = layout.train.read_latest()
    except HandoffError as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    training_set = RunPaths(latest.run_dir).training_set if latest else None
    return deletions_result(training_set, layout.ingest, "no adapter has been trained yet")


@dg.asset_check(
    asset=SERVED_MODEL,
    additional_deps=[raw_records, thread_context],
    automation_condition=when_ledger_changes(SERVED_MODEL),
    description="N examples of the served adapter's training set were deleted since (the current bundle's run); "
    "warns, a retrained adapter that passes its gates replaces it.",
)
def served_model_deleted_examples(storage: PipelineStorage) -> dg.AssetCheckResult:
    layout = recorded_agent(storage)[1]
    try:
        bundle = current_bundle(layout.serve)
    except BundleError as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    run_dir = bundle.source.get("run_dir") if bundle else None
    training_set = RunPaths(Path(run_dir)).training_set if run_dir else None
    nothing = "no bundle is served" if bundle is None else f"bundle {bundle.version} names no training set"
    return deletions_result(training_set, layout.ingest, nothing)
