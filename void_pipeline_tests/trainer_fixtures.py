"""Trainer fixtures: the trainer environment, the tiny model built from the corpus, a small chat dataset, and the
session's one trained (and merged) adapter that every test needing *an* adapter shares (train, evaluate, serve).
Loaded for the whole suite by the root conftest (pytest_plugins)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import orjson
import pytest

from void_pipeline.defs.external import OFFLINE
from void_pipeline.defs.train.assets import lora_adapter, merged_model
from void_pipeline.lib import environments
from void_pipeline.lib.curate.dataset import format_row
from void_pipeline.lib.paths import REPO_ROOT
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer
from void_pipeline.testworld.cli import build_tiny_model, instruct_pretraining
from void_pipeline.testworld.corpus import POST, Corpus, record_text
from void_pipeline_tests.conftest import model_choice


@pytest.fixture(scope="session")
def trainer_bin() -> Path:
    return environments.ensure("trainer") / "bin"


def run_trainer(
    trainer_bin: Path, *args: str, cwd: Path | None = None, timeout: int = 600, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A command in the trainer environment (its bin first on PATH: axolotl starts `accelerate` from there)."""
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(REPO_ROOT), "PATH": f"{trainer_bin}:{os.environ['PATH']}"}
    return subprocess.run(
        list(args),
        cwd=cwd or REPO_ROOT,
        env=env,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def tiny_model(trainer_bin: Path, corpus_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    tokenizer = corpus_tokenizer
    result = run_trainer(
        trainer_bin,
        str(trainer_bin / "python"),
        "-m",
        "void_pipeline.testworld.tiny_model",
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(root / "model"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "model"


@pytest.fixture(scope="session")
def instruct_model(corpus: Corpus, corpus_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model pretrained as the demo's is (other authors' posts, and replies answered with the reply tool):
    it writes well-formed calls, where the random one writes none. Built once per content and cached (~70 s cold on
    two cores)."""
    root = tmp_path_factory.mktemp("instruct")
    pretraining = root / "pretraining.jsonl"
    pretraining.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in instruct_pretraining(corpus)))
    build_tiny_model(corpus_tokenizer, root / "model", pretraining)
    return root / "model"


@pytest.fixture(scope="session")
def tiny_dataset(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenAI-format rows: a prompt and the agent's real posts as tool calls."""
    posts = [record_text(r.value) for r in corpus.records if r.collection == POST and r.author == corpus.agent.handle]
    rows = [
        format_row(
            {
                "prompt": f"You received a mention. MOST RECENT POST: {posts[i + 1][:120]}",
                "calls": [posts[i]],
                "reasoning": None,
            },
            "openai",
        )
        for i in range(0, 120, 2)
    ]
    path = tmp_path_factory.mktemp("dataset") / "train.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return path


def materialize(
    curated: dict[str, Any],
    tiny_model: Path | str,
    trainer_bin: Path,
    overrides: dict[str, Any],
    *,
    instance: dg.DagsterInstance | None = None,
    storage: PipelineStorage | None = None,
    assets: tuple[dg.AssetsDefinition, ...] = (lora_adapter,),
    choice: dict[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """Train (and merge) on the curated dataset with the tests' model choice, ``choice`` changing fields of it."""
    resources = {
        **curated["resources"],
        "model": model_choice(local_path=str(tiny_model), **(choice or {})),
        "trainer": Trainer(overrides=overrides, python=str(trainer_bin / "python")),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        **({"storage": storage} if storage else {}),
    }
    return dg.materialize(
        [*curated["assets"], lora_adapter, merged_model],
        selection=[a.key for a in assets],
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )


def value(metadata: Any, key: str) -> Any:
    return metadata[key].value


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "the run was expected to fail"
    error = failures[0].step_failure_data.error
    return "\n".join(
        filter(None, [error.message if error else "", str(failures[0].step_failure_data.user_failure_data)])
    )


def mlflow_run(curated: dict[str, Any], dagster_run_id: str) -> Any:
    store = Path(curated["storage"].root) / "mlflow"
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["void-lora"], output_format="list")
    return next(r for r in runs if r.data.tags.get("dagster_run_id") == dagster_run_id)


@dataclass(frozen=True)
class Trained:
    instance: dg.DagsterInstance
    result: dg.ExecuteInProcessResult

    @property
    def adapter(self) -> Path:
        return Path(str(value(self.result.asset_materializations_for_node("lora_adapter")[0].metadata, "adapter_path")))


@pytest.fixture(scope="session")
def trained(curated: dict[str, Any], tiny_model: Path, trainer_bin: Path) -> Iterator[Trained]:
    """One real training of the tiny model (12 steps, logged every 2: steps are numbered by the trainer, not
    counted) and its merge, shared by every test that needs an adapter."""
    overrides = {"max_steps": 12, "save_steps": 6, "logging_steps": 2}
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(
            curated, tiny_model, trainer_bin, overrides, instance=instance, assets=(lora_adapter, merged_model)
        )
        assert result.success, failure_text(result)
        yield Trained(instance, result)
