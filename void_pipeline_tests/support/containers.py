"""Stand-ins for a Docker engine and a Kubernetes API server, for the Pipes clients' own code to run against here
(no engine, no cluster on this machine). Each records what the real client sent and "runs" the container as the
real one would: a Python process with exactly the environment the client gave the container, in which
``open_dagster_pipes()`` (what our entry points call) reports back on stderr, the stream both clients read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import docker
import kubernetes

# What runs "in" the container: our entry points' Pipes pattern, reporting the extras it received.
CHILD = """
import json
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(metadata={"extras": json.dumps(pipes.extras, sort_keys=True)})
"""


def run_child(env: Mapping[str, str]) -> list[str]:
    """The stand-in step with ``env`` as its whole environment (plus PATH): its stderr lines."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**env, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stderr.splitlines()


class RecordingDockerEngine(docker.APIClient):  # type: ignore[misc]
    """The Docker SDK's low-level API client with the engine calls answered here: the SDK's own models
    (ContainerCollection.create, HostConfig) build the request, and ``created`` keeps it as the engine gets it."""

    def __init__(self) -> None:
        super().__init__(base_url="unix:///nonexistent/docker.sock", version="1.47")  # fixed: no version probe
        self.created: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.log_lines: list[str] = []

    def create_container(self, **kwargs: Any) -> dict[str, str]:
        self.created.append(kwargs)
        return {"Id": "c0ffee"}

    def inspect_container(self, container: str) -> dict[str, Any]:
        return {"Id": container, "Config": {"Tty": False}}

    def start(self, container: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append("start")
        self.log_lines = run_child(self.created[-1]["environment"])

    def logs(self, container: str, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        return iter(f"{line}\n".encode() for line in self.log_lines)

    def wait(self, container: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("wait")
        return {"StatusCode": 0}

    def stop(self, container: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append("stop")


def docker_client(engine: RecordingDockerEngine) -> docker.DockerClient:
    """A real DockerClient (what ``docker.from_env()`` returns) over the recording engine."""
    client = docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.47")
    client.api = engine
    return client


class RecordingCoreApi:
    """kubernetes.client.CoreV1Api as dagster-k8s uses it for a Pipes pod: the created pod kept as the API server
    gets it (the client's own serialization), the pod "runs" at once and ends with exit code 0."""

    instances: ClassVar[list[RecordingCoreApi]] = []

    def __init__(self, api_client: Any = None) -> None:
        self.api_client = api_client or kubernetes.client.ApiClient()
        self.created: list[tuple[str, dict[str, Any]]] = []
        self.deleted: list[tuple[str, str]] = []
        self.log_lines: list[str] = []
        RecordingCoreApi.instances.append(self)

    def create_namespaced_pod(self, namespace: str, body: Any, **kwargs: Any) -> Any:
        wire = self.api_client.sanitize_for_serialization(body)
        self.created.append((namespace, wire))
        env = {item["name"]: item["value"] for item in wire["spec"]["containers"][0].get("env", [])}
        self.log_lines = run_child(env)
        return body

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any:
        state = kubernetes.client.V1ContainerState(terminated=kubernetes.client.V1ContainerStateTerminated(exit_code=0))
        status = kubernetes.client.V1ContainerStatus(
            name="dagster-pipes-execution", image="", image_id="", ready=False, restart_count=0, state=state
        )
        pod = kubernetes.client.V1Pod(status=kubernetes.client.V1PodStatus(container_statuses=[status]))
        return kubernetes.client.V1PodList(items=[pod])

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> Iterator[bytes]:
        return iter(f"2026-12-07T19:00:00.{i:09d}Z {line}\n".encode() for i, line in enumerate(self.log_lines))

    def delete_namespaced_pod(self, name: str, namespace: str, **kwargs: Any) -> None:
        self.deleted.append((namespace, name))


def kubeconfig() -> str:
    """A kubeconfig for the client's config loading (its server is never contacted)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
            "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )
