"""GPU steps in production containers: the Docker container and the Kubernetes pod our code asks for, and that
run_external hands them to dagster-docker's and dagster-k8s's real Pipes clients. No Docker engine and no cluster
run here: the clients talk to recording stand-ins at their lowest level (support/containers.py)."""

import json
import os
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import docker
import kubernetes
import pytest

from void_pipeline.defs.external import OFFLINE, run_external, trainer_container
from void_pipeline.lib import containers
from void_pipeline.lib.layout import RunPaths
from void_pipeline.resources.trainer import Trainer
from void_pipeline_tests.support.containers import (
    CHILD,
    RecordingCoreApi,
    RecordingDockerEngine,
    docker_client,
    kubeconfig,
)

# The steps that run in the trainer image (lora_adapter, merged_model, eval_report's model measures, gguf_export)
STEP_MODULES = [
    "void_pipeline.external.train_lora",
    "void_pipeline.external.merge_lora",
    "void_pipeline.external.evaluate_models",
    "void_pipeline.external.export_gguf",
]
# Secrets the code location holds: none may reach a trainer container, by value or otherwise.
SECRETS = {
    "VOID_SERVE_API_KEY": "sk-serve-literal-7f3a9c",
    "VOID_APP_PASSWORD": "app-password-literal-51d2",
    "DAGSTER_PG_PASSWORD": "pg-literal-0e8b",
}


@pytest.fixture
def production(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunPaths:
    """The data folder at tmp_path, the code location's secrets set, and a run folder; settings default."""
    monkeypatch.setenv("VOID_PIPELINE_DATA", str(tmp_path))
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    for name in ("VOID_TRAINER_IMAGE", "VOID_DATA_VOLUME", "VOID_DOCKER_NETWORK", "VOID_SETTINGS_FILE"):
        monkeypatch.delenv(name, raising=False)
    run = RunPaths(tmp_path / "agents" / "void" / "train" / "runs" / "20261207-190000")
    run.root.mkdir(parents=True)
    return run


@pytest.mark.parametrize("module", STEP_MODULES)
def test_docker_container_runs_the_step_in_the_trainer_image_on_one_gpu_with_the_data_volume(
    module: str, production: RunPaths, tmp_path: Path
) -> None:
    step = trainer_container(module, production)
    assert (step.image, step.command) == ("void-pipeline/trainer", ["python", "-m", module])
    assert step.env == OFFLINE
    assert containers.docker_container_kwargs(step, "void-pipeline") == {
        "volumes": {"void-pipeline-data": {"bind": str(tmp_path), "mode": "rw"}},
        "working_dir": str(production.root),
        "device_requests": [{"driver": "nvidia", "count": 1, "capabilities": [["gpu"]]}],
        "shm_size": "8gb",
        "network": "void-pipeline",
        "init": True,
        "labels": {"void-pipeline.step": module},
    }


@pytest.mark.parametrize("module", STEP_MODULES)
def test_kubernetes_pod_asks_for_one_gpu_on_a_gpu_node_with_the_claim(
    module: str, production: RunPaths, tmp_path: Path
) -> None:
    spec = containers.k8s_pod_spec(trainer_container(module, production))
    offline = [{"name": name, "value": value} for name, value in OFFLINE.items()]
    assert spec == {
        "containers": [
            {
                "image": "void-pipeline/trainer",
                "command": ["python", "-m", module],
                "working_dir": str(production.root),
                "env": offline,
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                "volume_mounts": [
                    {"name": "pipeline-data", "mount_path": str(tmp_path)},
                    {"name": "shm", "mount_path": "/dev/shm"},
                ],
            }
        ],
        "volumes": [
            {"name": "pipeline-data", "persistent_volume_claim": {"claim_name": "void-pipeline-data"}},
            {"name": "shm", "empty_dir": {"medium": "Memory", "size_limit": "8Gi"}},
        ],
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "restart_policy": "Never",
    }


def test_settings_choose_the_image_volume_and_network(production: RunPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOID_TRAINER_IMAGE", "registry.example/void/trainer:7")
    monkeypatch.setenv("VOID_DATA_VOLUME", "shared-data")
    step = trainer_container("void_pipeline.external.merge_lora", production)
    assert (step.image, step.data_volume) == ("registry.example/void/trainer:7", "shared-data")
    assert containers.k8s_pod_spec(step)["volumes"][0]["persistent_volume_claim"] == {"claim_name": "shared-data"}


def materialize_step(run: RunPaths, module: str) -> tuple[dict[str, Any], str]:
    """An asset whose body is one run_external call, materialized in process: the extras the step received, and
    the Dagster run's id."""

    @dg.asset
    def step(
        context: dg.AssetExecutionContext, pipes_subprocess_client: dg.PipesSubprocessClient, trainer: Trainer
    ) -> dg.MaterializeResult[Any]:
        invocation = run_external(context, pipes_subprocess_client, trainer, module, run, {"config": "effective.yml"})
        return invocation.get_materialize_result()

    # the trainer interpreter does not exist: a container step must never start the local subprocess
    resources = {"pipes_subprocess_client": dg.PipesSubprocessClient(), "trainer": Trainer(python="/no/trainer/python")}
    result = dg.materialize([step], resources=resources)
    reported = result.asset_materializations_for_node("step")[0].metadata["extras"]
    extras: dict[str, Any] = json.loads(str(reported.value))
    return extras, result.run_id


def test_run_external_hands_the_docker_client_exactly_our_container(
    production: RunPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOID_EXECUTOR", "docker")
    engine = RecordingDockerEngine()
    # the real PipesDockerClient gets its engine from docker.from_env(): a real DockerClient over the recorder
    monkeypatch.setattr(docker.client, "from_env", lambda **_: docker_client(engine))
    extras, run_id = materialize_step(production, "void_pipeline.external.merge_lora")

    [created] = engine.created
    assert (created["image"], created["command"]) == (
        "void-pipeline/trainer",
        ["python", "-m", "void_pipeline.external.merge_lora"],
    )
    assert created["working_dir"] == str(production.root)
    assert OFFLINE.items() <= created["environment"].items()
    host = created["host_config"]  # as the SDK sends it to the engine
    assert host["Binds"] == [f"void-pipeline-data:{tmp_path}:rw"]
    assert [{k: r[k] for k in ("Driver", "Count", "Capabilities")} for r in host["DeviceRequests"]] == [
        {"Driver": "nvidia", "Count": 1, "Capabilities": [["gpu"]]}
    ]
    assert (host["ShmSize"], host["NetworkMode"], host["Init"]) == (8 * 1024**3, "void-pipeline", True)
    assert created["labels"] == {"void-pipeline.step": "void_pipeline.external.merge_lora"}
    assert engine.calls == ["start", "wait", "stop"]
    # what our entry points read through open_dagster_pipes(): the run's paths, and no host pid to watch
    assert extras == {
        "config": "effective.yml",
        "run_dir": str(production.root),
        "failure_path": str(production.failure(run_id)),
        "watch_pids": [],
    }
    sent = json.dumps(created, default=str)
    assert not [name for name, value in SECRETS.items() if value in sent or name in sent]


def test_run_external_hands_the_kubernetes_client_exactly_our_pod(
    production: RunPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOID_EXECUTOR", "k8s")
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig())
    # the client's own config loading reads $KUBECONFIG, captured when kubernetes is imported: point it here
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    RecordingCoreApi.instances.clear()
    # the real PipesK8sClient builds kubernetes.client.CoreV1Api(): the recorder stands in for the API server
    monkeypatch.setattr(kubernetes.client, "CoreV1Api", RecordingCoreApi)
    extras, run_id = materialize_step(production, "void_pipeline.external.train_lora")

    [(namespace, pod)] = [created for api in RecordingCoreApi.instances for created in api.created]
    assert namespace == "default"  # in a cluster: the step pod's own namespace (its service account's)
    spec = pod["spec"]  # the API server's camelCase, as the client serializes it
    [container] = spec["containers"]
    assert (container["image"], container["command"]) == (
        "void-pipeline/trainer",
        ["python", "-m", "void_pipeline.external.train_lora"],
    )
    assert container["workingDir"] == str(production.root)
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert {"name": "pipeline-data", "mountPath": str(tmp_path)} in container["volumeMounts"]
    assert {"name": "pipeline-data", "persistentVolumeClaim": {"claimName": "void-pipeline-data"}} in spec["volumes"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["restartPolicy"] == "Never"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert OFFLINE.items() <= env.items() and "envFrom" not in container
    assert [deleted for api in RecordingCoreApi.instances for deleted in api.deleted] == [
        ("default", pod["metadata"]["name"])
    ]
    assert extras == {
        "config": "effective.yml",
        "run_dir": str(production.root),
        "failure_path": str(production.failure(run_id)),
        "watch_pids": [],
    }
    sent = json.dumps(pod)
    assert not [name for name, value in SECRETS.items() if value in sent or name in sent]


def test_without_an_executor_the_step_is_the_trainer_subprocess_as_before(
    production: RunPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOID_EXECUTOR", raising=False)
    (production.root / "pipes_probe.py").write_text(CHILD)  # `python -m` finds it in the step's cwd, the run folder

    @dg.asset
    def step(
        context: dg.AssetExecutionContext, pipes_subprocess_client: dg.PipesSubprocessClient, trainer: Trainer
    ) -> dg.MaterializeResult[Any]:
        return run_external(
            context, pipes_subprocess_client, trainer, "pipes_probe", production, {}
        ).get_materialize_result()

    result = dg.materialize(
        [step],
        resources={"pipes_subprocess_client": dg.PipesSubprocessClient(), "trainer": Trainer(python=sys.executable)},
    )
    extras = json.loads(str(result.asset_materializations_for_node("step")[0].metadata["extras"].value))
    assert extras["run_dir"] == str(production.root)
    assert extras["watch_pids"] == [os.getpid()]  # in process: this process is the step the child watches
