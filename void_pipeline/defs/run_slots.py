"""Pool slots (the "gpu" pool) of runs that died: a dead run's step must never hold the slot every later GPU step
waits for.

Three ways out, from the most immediate: a step that sees its run worker die records the run as failed and frees
its slots at once (``record_dead_worker``); the daemon's run monitoring frees the slots of any finished run after
``free_slots_after_run_end_seconds`` (both instance configs turn it on); and ``python -m void_pipeline free-slots``
(``free_slots``) frees them by hand — every finished run's, or a named run's after marking it failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg


def record_dead_worker(context: dg.AssetExecutionContext) -> Callable[[str], None]:
    """What a step does when its run worker is gone (``processes.bound_to_run_worker``): nobody else is left to
    fail the run or give back the pool slots its steps hold."""

    def record(message: str) -> None:
        context.instance.report_run_failed(context.run, message)
        release(context.instance, context.run.run_id)

    return record


def release(instance: dg.DagsterInstance, run_id: str) -> None:
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        storage.free_concurrency_slots_for_run(run_id)


@dataclass(frozen=True)
class HeldSlot:
    pool: str
    run_id: str
    step_key: str
    status: str  # the run's status; "missing" when the run was deleted


@dataclass(frozen=True)
class SlotsReport:
    freed: list[HeldSlot]
    still_held: list[HeldSlot]  # by runs that are not finished (queued, starting, started, canceling)


def held_slots(instance: dg.DagsterInstance) -> list[HeldSlot]:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    held = []
    for pool in sorted(storage.get_concurrency_keys()):
        for claim in storage.get_concurrency_info(pool).claimed_slots:
            run = instance.get_run_by_id(claim.run_id)
            held.append(HeldSlot(pool, claim.run_id, claim.step_key, run.status.value if run else "missing"))
    return held


FINISHED = {s.value for s in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)}


def free_slots(instance: dg.DagsterInstance, fail_run: str | None = None) -> SlotsReport:
    """Free the slots of every finished (or deleted) run; with ``fail_run``, first mark that run failed (its worker
    is known dead) so its slots are freed too. Runs still going keep theirs."""
    if fail_run is not None:
        run = instance.get_run_by_id(fail_run)
        if run is None:
            raise ValueError(f"no run {fail_run} in the instance at {instance.root_directory}")
        if run.status.value not in FINISHED:  # the operator knows its worker is gone; Dagster's launcher cannot
            instance.report_run_failed(
                run, "marked failed by `void_pipeline free-slots --fail-run`: its worker is gone"
            )
    freed, still = [], []
    for slot in held_slots(instance):
        if slot.status in FINISHED or slot.status == "missing":
            freed.append(slot)
        else:
            still.append(slot)
    for run_id in sorted({s.run_id for s in freed}):
        release(instance, run_id)
    return SlotsReport(freed, still)
