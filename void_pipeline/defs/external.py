"""Work outside the orchestrator, once: the Dagster Pipes launch into the trainer environment (a subprocess locally;
with VOID_EXECUTOR=docker or k8s a trainer-image container or pod on a GPU), the binding that fails the run when its
worker dies, and the tags that put a GPU step on a GPU node."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from void_pipeline.defs.run_slots import record_dead_worker
from void_pipeline.lib import containers, processes
from void_pipeline.lib.layout import REPO_ROOT, RunPaths, data_root
from void_pipeline.lib.settings import settings
from void_pipeline.resources.trainer import Trainer

# Under the Kubernetes executor (VOID_EXECUTOR=k8s, dagster-k8s) a step with these tags runs in a pod of its own on
# a GPU node, asking for one GPU; other executors ignore them. Steps whose GPU work is a Pipes step (run_external) go
# without: their Pipes pod asks for the GPU (lib/containers.py), and the step's own pod needs none.
GPU_STEP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {containers.GPU_RESOURCE: "1"}}},
        "pod_spec_config": {
            "node_selector": dict(containers.GPU_NODE_SELECTOR),
            "tolerations": [dict(t) for t in containers.GPU_TOLERATIONS],
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
    """A Pipes step (``python -m module``) in the trainer environment, bound to this run: ``client``'s subprocess,
    or with VOID_EXECUTOR=docker/k8s a trainer-image container/pod on a GPU. A failure it explained (its failure
    file) becomes a clear dg.Failure."""
    failure = run.failure(context.run.run_id)
    failure.unlink(missing_ok=True)
    with bound_to_run_worker(context) as watch_pids:
        try:
            if settings().executor in ("docker", "k8s"):
                # host pids mean nothing in a container: the client stops it when this step ends
                extras = {**extras, "run_dir": str(run.root), "failure_path": str(failure), "watch_pids": []}
                return run_in_container(context, module, run, extras)
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


def trainer_container(module: str, run: RunPaths) -> containers.StepContainer:
    """The trainer-image container of a Pipes step: the data volume/claim at the data folder's own path."""
    chosen = settings()
    return containers.StepContainer(
        image=chosen.trainer_image,
        module=module,
        env=dict(OFFLINE),
        data_volume=chosen.data_volume,
        data_path=str(data_root()),
        working_dir=str(run.root),
    )


def run_in_container(
    context: dg.AssetExecutionContext, module: str, run: RunPaths, extras: dict[str, Any]
) -> dg.PipesClientCompletedInvocation:
    """The step through dagster-docker's or dagster-k8s's Pipes client (context in an environment variable, messages
    read from the container's log), by VOID_EXECUTOR; the client library is imported only when chosen."""
    step, chosen = trainer_container(module, run), settings()
    if chosen.executor == "docker":
        from dagster_docker import PipesDockerClient

        return PipesDockerClient().run(
            context=context,
            image=step.image,
            command=step.command,
            env=step.env,
            container_kwargs=containers.docker_container_kwargs(step, chosen.docker_network),
            extras=extras,
        )
    from dagster_k8s import PipesK8sClient

    return PipesK8sClient().run(context=context, base_pod_spec=containers.k8s_pod_spec(step), extras=extras)


def reported_metadata(invocation: dg.PipesClientCompletedInvocation) -> dict[str, Any]:
    """The metadata the external step reported with its materialization."""
    return dict(invocation.get_materialize_result().metadata or {})
