"""The container a GPU step's Pipes process runs in, in production: the arguments of a Docker container (the shape
of docker/compose.yaml) and the Kubernetes pod spec (the shape of deploy/helm/values.yaml). Pure data: no dagster,
docker or kubernetes import; defs/external.py hands these to dagster-docker's and dagster-k8s's Pipes clients.

The step sees the data at the same path as the orchestrator (the shared volume or claim mounted there), so every
path in its Pipes extras means the same thing inside. It is given no secret: the trainer runs offline and the
orchestrator does the MLflow logging, so none of the code location's keys or passwords reach its container.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's resource name
# The GPU node pool: the NVIDIA GPU operator's node label, and the taint that keeps other pods off those nodes.
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
# /dev/shm for torch's data loader workers: Docker's default is 64 MB, too small.
SHM_SIZE = "8gb"  # Docker's spelling, as compose's shm_size
SHM_SIZE_K8S = "8Gi"
DATA_VOLUME = "pipeline-data"  # the pod's name for the claim (the Helm values' volumes use the same)
STEP_LABEL = "void-pipeline.step"  # on each Docker container: the step's module


@dataclass(frozen=True)
class StepContainer:
    """One Pipes step in the trainer image: ``python -m module`` in ``working_dir`` with ``env``, on one GPU, with
    the data volume (Docker) or claim (Kubernetes) ``data_volume`` mounted at ``data_path``."""

    image: str
    module: str
    env: dict[str, str]
    data_volume: str
    data_path: str
    working_dir: str

    @property
    def command(self) -> list[str]:
        return ["python", "-m", self.module]  # the image's own interpreter comes first on its PATH


def docker_container_kwargs(step: StepContainer, network: str) -> dict[str, Any]:
    """The Docker SDK's ``containers.create`` arguments besides image, command and environment: the data volume, one
    NVIDIA GPU (compose's ``driver: nvidia, count: 1, capabilities: [gpu]``), shared memory, the network."""
    return {
        "volumes": {step.data_volume: {"bind": step.data_path, "mode": "rw"}},
        "working_dir": step.working_dir,
        "device_requests": [{"driver": "nvidia", "count": 1, "capabilities": [["gpu"]]}],
        "shm_size": SHM_SIZE,
        "network": network,
        "init": True,  # a small init as pid 1 reaps the trainer's process groups and forwards the stop signal
        "labels": {STEP_LABEL: step.module},  # finished containers are kept (their logs): found and pruned by it
    }


def k8s_pod_spec(step: StepContainer) -> dict[str, Any]:
    """The pod spec (snake_case, as dagster-k8s reads it) of the step: one container asking for one GPU, on a GPU
    node, with the claim mounted; never restarted (a failed step is Dagster's to retry)."""
    return {
        "containers": [
            {
                "image": step.image,
                "command": step.command,
                "working_dir": step.working_dir,
                "env": [{"name": name, "value": value} for name, value in step.env.items()],
                "resources": {"limits": {GPU_RESOURCE: "1"}},
                "volume_mounts": [
                    {"name": DATA_VOLUME, "mount_path": step.data_path},
                    {"name": "shm", "mount_path": "/dev/shm"},
                ],
            }
        ],
        "volumes": [
            {"name": DATA_VOLUME, "persistent_volume_claim": {"claim_name": step.data_volume}},
            {"name": "shm", "empty_dir": {"medium": "Memory", "size_limit": SHM_SIZE_K8S}},
        ],
        "node_selector": dict(GPU_NODE_SELECTOR),
        "tolerations": [dict(t) for t in GPU_TOLERATIONS],
        "restart_policy": "Never",
    }
