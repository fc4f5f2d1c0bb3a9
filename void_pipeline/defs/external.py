"""Work outside the orchestrator, once: the Dagster Pipes launch into the trainer environment, the binding that
fails the run when its worker dies, and the tags that put a GPU step on a GPU node."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from void_pipeline.defs.run_slots import record_dead_worker
from void_pipeline.lib import processes
from void_pipeline.lib.layout import REPO_ROOT, RunPaths
from void_pipeline.resources.trainer import Trainer

# Under the Kubernetes executor (VOID_EXECUTOR=k8s, dagster-k8s) a step with these tags runs in a pod of its own on
# a GPU node, asking for one GPU; other executors ignore them.
GPU_STEP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
}
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
}


class TrainerFailure(dg.Failure):
    """A failure the trainer explained (its failure file): ``stage`` says where."""

    def __init__(self, stage: str, errors: list[str], run_dir: Path) -> None:
        super().__init__(
            description=f"{stage}: " + "\n".join(errors),
            metadata={"stage": stage, "run_dir": dg.MetadataValue.path(str(run_dir))},
            allow_retries=stage != "lock",
        )
        self.stage = stage


@contextmanager
def bound_to_run_worker(context: dg.AssetExecutionContext) -> Iterator[list[int]]:
    """The block's child processes stop when this step or its run worker is gone; a dead worker's run is marked
    failed and its pool slots freed (nobody else is left to). Yields the pids a child should watch."""
    with processes.bound_to_run_worker(record_dead_worker(context)) as watch_pids:
        yield watch_pids


def run_external(
    context: dg.AssetExecutionContext,
    client: dg.PipesSubprocessClient,
    trainer: Trainer,
    module: str,
    run: RunPaths,
    extras: dict[str, Any],
) -> dg.PipesClientCompletedInvocation:
    """A Pipes step (``python -m module``) in the trainer environment, bound to this run. A failure it explained
    (its failure file) becomes a clear dg.Failure."""
    failure = run.failure(context.run.run_id)
    failure.unlink(missing_ok=True)
    with bound_to_run_worker(context) as watch_pids:
        try:
            return client.run(
                context=context,
                command=[trainer.interpreter(), "-m", module],
                extras={**extras, "run_dir": str(run.root), "failure_path": str(failure), "watch_pids": watch_pids},
                env={**OFFLINE, "PYTHONPATH": str(REPO_ROOT)},
                cwd=str(run.root),
            )
        except Exception as err:  # the Pipes client raises a private error type for a non-zero exit
            if not failure.exists():
                raise
            explained = json.loads(failure.read_text())
            raise TrainerFailure(explained["stage"], explained["errors"], run.root) from err


def reported_metadata(invocation: dg.PipesClientCompletedInvocation) -> dict[str, Any]:
    """The metadata the external step reported with its materialization."""
    return dict(invocation.get_materialize_result().metadata or {})
