"""docker/ cannot be built here (no Docker engine): check statically that the files hang together."""

from __future__ import annotations

import re
import subprocess

import yaml

from void_pipeline.lib.paths import REPO_ROOT

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


def test_trainer_image_installs_the_trainer_pins_with_cuda_torch() -> None:
    text = (DOCKER / "trainer.Dockerfile").read_text()
    assert "envs/trainer.txt" in text and "whl/cu" in text
    assert "void_pipeline.external.train_lora" in text and "axolotl_configs" in text
    # the image's sed, applied to the real pins, swaps torch's CPU build for the CUDA one and nothing else
    expression = re.search(r"sed '([^']+)' envs/trainer.txt", text)
    assert expression, "the trainer image rewrites the torch pin with sed"
    pins = REPO_ROOT / "envs" / "trainer.txt"
    rewritten = subprocess.run(["sed", expression.group(1), str(pins)], capture_output=True, text=True, check=True)
    before, after = pins.read_text().splitlines(), rewritten.stdout.splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 1 and changed[0][0].endswith("+cpu") and changed[0][1] == changed[0][0].removesuffix("+cpu")
