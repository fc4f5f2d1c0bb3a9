"""What one stage hands the next through a file: a typed record each, with one writer and one reader.

The files keep the keys they always had, so a data folder written before these records still reads; a file of an
older or unknown shape fails in one line naming the file, what it lacks and which asset writes it again.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from void_pipeline.lib.files import write_text_atomic

if TYPE_CHECKING:  # the serving outcome carries the reference client's answer; this module stays stdlib-only
    from void_pipeline.lib.serve.client import Answer


class HandoffError(ValueError):
    """A hand-off file that cannot be read as its record: the message names the file and the way out."""


def load_object(path: Path, producer: str) -> dict[str, Any] | None:
    """The JSON object in ``path`` (None when there is no file); anything else fails naming the file."""
    if not path.exists():
        return None
    try:
        loaded = json.loads(path.read_text())
    except ValueError as err:
        raise HandoffError(f"{path} is not valid JSON ({err}): materialize {producer} again") from err
    if not isinstance(loaded, dict):
        raise HandoffError(f"{path} holds a {type(loaded).__name__}, not a JSON object: materialize {producer} again")
    return loaded


@dataclass(frozen=True)
class Handoff:
    """A record stored as one flat JSON object, its fields under their own names; paths as strings."""

    producer: ClassVar[str]  # the asset that writes the file: what to materialize again when it is damaged

    @classmethod
    def read(cls, path: Path) -> Self | None:
        """The record in ``path`` (None when there is no file); HandoffError naming what it lacks."""
        producer = cls.producer
        loaded = load_object(path, producer)
        if loaded is None:
            return None
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in loaded]
        if missing:
            raise HandoffError(
                f"{path} lacks {', '.join(missing)} (an older or unknown shape): materialize {producer} again"
            )
        values = {f.name: loaded[f.name] for f in fields(cls) if f.name in loaded}
        # a field annotated Path (or Path | None; annotations are strings under `from __future__ import annotations`)
        paths = {f.name for f in fields(cls) if str(f.type).startswith("Path")}
        return cls(**{k: Path(v) if k in paths and v else v for k, v in values.items()})

    def write(self, path: Path) -> None:
        data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        write_text_atomic(path, json.dumps(data, indent=2))


@dataclass(frozen=True)
class TrainingOutcome(Handoff):
    """train/latest.json: the newest finished training run, what every stage after training starts from."""

    producer: ClassVar[str] = "lora_adapter"

    run_dir: Path
    adapter: Path
    base_model: str
    config: Path  # the effective axolotl config
    dataset: Path
    dataset_sha256: str | None = None
    mlflow_run: str | None = None
    model_version: str | None = None
    dagster_run: str | None = None
    source_uris_sha256: str | None = None  # the training set's posts (lib/train/training_set.py uris_digest)


@dataclass(frozen=True)
class ContextWindowReport(Handoff):
    """context_window/report.json: the system prompt variant chat_dataset uses, and each variant's tokens."""

    producer: ClassVar[str] = "context_window"

    selected: str  # full | trimmed | distilled
    tokens: dict[str, int]  # per variant
    runtime: str = "direct"
    source: str | None = None
    agent_type: str | None = None
    prompt_template: str | None = None  # the context source's own mention template, when it has one
    snapshot_date: str | None = None
    budget_tokens: int | None = None
    exact_tokens: bool | None = None
    tokenizer: str | None = None


@dataclass(frozen=True)
class DatasetPointer(Handoff):
    """chat_dataset/latest.json: the format chat_dataset built last, the dataset training reads."""

    producer: ClassVar[str] = "chat_dataset"

    format: str


@dataclass(frozen=True)
class EvaluationPointer(Handoff):
    """evaluate/latest.json: the newest evaluation folder and the training outcome it evaluated."""

    producer: ClassVar[str] = "eval_generations"

    folder: Path
    run_dir: Path
    base_model: str
    adapter: Path
    dataset: Path
    config: Path | None = None
    mlflow_run: str | None = None
    model_version: str | None = None

    @classmethod
    def of(cls, folder: Path, training: TrainingOutcome) -> EvaluationPointer:
        return cls(
            folder=folder,
            run_dir=training.run_dir,
            base_model=training.base_model,
            adapter=training.adapter,
            dataset=training.dataset,
            config=training.config,
            mlflow_run=training.mlflow_run,
            model_version=training.model_version,
        )


@dataclass(frozen=True)
class GateVerdict:
    """One blocking gate of an evaluation report (report.json's ``blocking``): what serving waits on."""

    passed: bool
    why: str

    @staticmethod
    def as_json(gates: dict[str, tuple[bool, str]]) -> dict[str, dict[str, Any]]:
        """The ``blocking`` object report.json holds, as ``read_gates`` reads it."""
        return {name: asdict(GateVerdict(passed, why)) for name, (passed, why) in gates.items()}


def read_gates(report: Path) -> dict[str, GateVerdict]:
    """The blocking gates of an evaluation report; a report without them fails naming the file."""
    loaded = load_object(report, "eval_report")
    if loaded is None:
        raise HandoffError(f"{report} is missing: materialize eval_report")
    blocking = loaded.get("blocking")
    if not isinstance(blocking, dict):
        raise HandoffError(f"{report} lacks blocking (an older or unknown shape): materialize eval_report again")
    try:
        return {name: GateVerdict(bool(gate["passed"]), str(gate.get("why", ""))) for name, gate in blocking.items()}
    except (KeyError, TypeError) as err:
        raise HandoffError(f"{report} has a blocking gate without passed ({err}): materialize eval_report") from err


@dataclass(frozen=True)
class ServingOutcome:
    """Where served_model's bundle answered its smoke test, and how it got there (not a file: one step's result)."""

    url: str
    kept: bool  # False: a temporary server, stopped after the smoke test
    how: str
    answer: Answer
    models: list[str]
