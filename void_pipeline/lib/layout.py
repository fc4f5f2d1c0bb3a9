"""Where the pipeline keeps its files (the data root) and every stage its folders: the one place that joins names.

::

    <data>/                                  $VOID_PIPELINE_DATA, default <repo>/.data
      agents/<agent name>/                   one folder per configured agent name (VOID_AGENT), whatever its DID
        agent.json                           who the name resolved to (DID, handle, PDS, PLC), written by ingest
        ingest/                              raw_records/, cars/, listing/, thread_context/   (IngestPaths)
        curate/                              filtered_records/, context_window/, chat_dataset/<format>/
        train/<run>/                         one folder per training run; train/latest.json names the newest
                                             finished one (written atomically when it completes)
        evaluate/<settings>/                 held-out generations and their report, per set of settings;
                                             evaluate/latest.json names the newest (EvaluationPaths)
        serve/bundles/v0001/                 one serving bundle per promotion (BundlePaths): adapter, chat
                                             template, prompt template, system prompt, tools, bundle.json
        serve/current.json                   the bundle being served (moved atomically: promote, roll back)
        serve/server.json, server.log        the managed server (``void-pipeline serve up``), while it runs
        serve/exports/<run>/                 a training run's merged model as GGUF, with what it read back as
                                             and an Ollama Modelfile, per output type (ExportPaths)
      identity/did-documents-<plc>.json      DID documents cached per PLC directory
      mlflow/  models/  devnet/  dagster_home/

A new stage gets a property on ``AgentLayout`` and a folder of its own under the agent; nothing else joins names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.handoffs import DatasetPointer, EvaluationPointer, TrainingOutcome

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class DataRootError(ValueError):
    """The data root cannot be a folder; the message names the variable and the path."""


def data_root(check: bool = True) -> Path:
    """Everything the pipeline writes: ``$VOID_PIPELINE_DATA``, default ``<repo>/.data``. A path that is a file (or
    lies under one) is refused here: read as a folder it looks empty ("no bundles", rc 0) to every command.
    ``check=False``: the path as configured, for a caller that reports the problem its own way."""
    from void_pipeline.lib.settings import settings  # imported here: settings imports this module

    configured = settings().pipeline_data
    root = Path(configured or REPO_ROOT / ".data").resolve()
    nearest = next((p for p in (root, *root.parents) if p.exists()), root)
    if check and not nearest.is_dir():
        where = f"VOID_PIPELINE_DATA={configured}" if configured else f"the data folder {root}"
        what = "is a file" if nearest == root else f"lies under the file {nearest}"
        raise DataRootError(f"{where} {what}, not a folder: point VOID_PIPELINE_DATA at a folder")
    return root


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or data_root() / "dagster_home").resolve()


def agent_name_error(name: str) -> str | None:
    if AGENT_NAME.match(name):
        return None
    return f"{name!r} is not a valid agent name (lowercase letters, digits and '-', like void or void-demo)"


def default_agent_name(actor: str) -> str:
    """The name an agent's folder gets when none is configured: the handle's first label (void.comind.network →
    void), or the DID's identifier."""
    base = actor.removeprefix("@").rsplit(":", 1)[-1] if actor.startswith("did:") else actor.removeprefix("@")
    label = re.sub(r"[^a-z0-9-]", "-", base.split(".")[0].lower()).strip("-")
    return label[:63] or "agent"


@dataclass(frozen=True)
class AgentRecord:
    """Who an agent's name resolved to when ingest last ran: downstream stages read this, not the network."""

    name: str
    did: str
    handle: str | None
    pds_url: str
    plc_url: str
    resolved_at: str

    @classmethod
    def now(cls, name: str, did: str, handle: str | None, pds_url: str, plc_url: str) -> AgentRecord:
        return cls(name, did, handle, pds_url, plc_url, datetime.now(UTC).isoformat(timespec="seconds"))


@dataclass(frozen=True)
class IngestPaths:
    """One agent's export (lib/ingest/export.py, lib/ingest/threads.py)."""

    root: Path

    @property
    def cars(self) -> Path:
        return self.root / "cars"

    def mst_nodes(self, rev: str) -> Path:
        """The repo tree's MST nodes at ``rev``: an incremental export walks the next diff CAR whole with them."""
        return self.cars / f"{rev}.mst.cbor"

    def records(self, collection: str) -> Path:
        return self.root / "raw_records" / f"{collection}.parquet"

    def rejected(self, collection: str) -> Path:
        return self.root / "raw_records" / f"{collection}.rejected.parquet"

    def state(self, collection: str) -> Path:
        return self.root / "raw_records" / f"{collection}.state.json"

    def writer_lock(self, collection: str) -> Path:
        """Held by the one process exporting ``collection`` (lib/files.acquire_owner)."""
        return self.root / "raw_records" / f"{collection}.lock"

    def listing(self, collection: str) -> Path:
        return self.root / "listing" / collection

    @property
    def thread_context(self) -> Path:
        return self.root / "thread_context" / "thread_context.parquet"

    @property
    def thread_context_lock(self) -> Path:
        return self.root / "thread_context" / "writer.lock"

    @property
    def post_cache(self) -> Path:
        return self.root / "thread_context" / "post_cache.jsonl"

    @property
    def deletions(self) -> Path:  # the ledger of posts gone upstream (lib/ingest/deletions.py)
        return self.root / "deletions" / "deleted_posts.parquet"

    @property
    def deletions_lock(self) -> Path:
        return self.root / "deletions" / "ledger.lock"

    @property
    def recheck_checkpoint(self) -> Path:  # where thread context's re-check of the ancestors stopped
        return self.root / "thread_context" / "recheck.json"


@dataclass(frozen=True)
class ContextWindowPaths:
    """context_window's folder (or its staging copy): one text file per variant and their report."""

    root: Path

    def variant(self, strategy: str) -> Path:
        return self.root / f"{strategy}.txt"

    def request(self, strategy: str) -> Path:  # the variant's request profile (lib/curate/request.py)
        return self.root / f"request-{strategy}.json"

    @property
    def report(self) -> Path:
        return self.root / "report.json"


@dataclass(frozen=True)
class DatasetPaths:
    """One chat dataset's folder (or its staging copy): what chat_dataset writes and training reads."""

    root: Path

    @property
    def format(self) -> str:
        return self.root.name

    def split(self, name: str) -> Path:  # train | val | test
        return self.root / f"{name}.jsonl"

    @property
    def index(self) -> Path:  # which thread each row came from, its split and tokens
        return self.root / "index.parquet"

    @property
    def heldout(self) -> Path:  # the test split as evaluation reads it: example id, thread, prompt, the real calls
        return self.root / "heldout.parquet"

    @property
    def manifest(self) -> Path:  # dataset.json: format, sizes, tokens, the model choice it was built for
        return self.root / "dataset.json"

    @property
    def system_prompt(self) -> Path:
        return self.root / "system_prompt.txt"

    @property
    def tools(self) -> Path:
        return self.root / "tools.json"

    @property
    def request(self) -> Path:  # request.json: the runtime's request profile (lib/curate/request.py)
        return self.root / "request.json"

    def prompt_template(self, syntax: str) -> Path:  # the mention template the prompts were rendered with
        return self.root / ("prompt_template.j2" if syntax == "jinja2" else "prompt_template.txt")

    def saved_prompt_template(self) -> Path | None:
        found = [p for p in (self.prompt_template("jinja2"), self.prompt_template("format")) if p.exists()]
        return found[0] if found else None


@dataclass(frozen=True)
class CuratePaths:
    root: Path

    @property
    def filtered(self) -> Path:
        return self.root / "filtered_records"

    def filtered_records(self, collection: str) -> Path:
        return self.filtered / f"{collection}.parquet"

    def filtered_rejected(self, collection: str) -> Path:
        return self.filtered / f"{collection}.rejected.parquet"

    @property
    def context_window(self) -> Path:
        return self.root / "context_window"

    def context_variant(self, strategy: str) -> Path:
        return ContextWindowPaths(self.context_window).variant(strategy)

    @property
    def context_report(self) -> Path:
        return ContextWindowPaths(self.context_window).report

    def context_request(self, strategy: str) -> Path:
        return ContextWindowPaths(self.context_window).request(strategy)

    @property
    def chat_datasets(self) -> Path:
        return self.root / "chat_dataset"

    def chat_dataset(self, fmt: str) -> Path:
        return self.chat_datasets / fmt

    @property
    def latest_dataset_record(self) -> Path:
        """Which format chat_dataset built last: the dataset training reads."""
        return self.chat_datasets / "latest.json"

    def write_latest_dataset(self, fmt: str) -> None:
        DatasetPointer(fmt).write(self.latest_dataset_record)

    def latest_dataset(self) -> Path | None:
        """The folder chat_dataset built last (None before the first build)."""
        pointer = DatasetPointer.read(self.latest_dataset_record)
        return self.chat_dataset(str(pointer.format)) if pointer else None


@dataclass(frozen=True)
class RunPaths:
    """One training run's folder (``train/<run>/``); the trainer processes get these paths, never join them."""

    root: Path

    @property
    def config(self) -> Path:  # the effective axolotl config
        return self.root / "axolotl.yml"

    @property
    def state(self) -> Path:  # fingerprint, status, the Dagster runs that worked on it
        return self.root / "state.json"

    @property
    def metrics(self) -> Path:  # one line per logged step or evaluation, appended by the trainer's callback
        return self.root / "metrics.jsonl"

    @property
    def adapter(self) -> Path:  # axolotl's output_dir, with checkpoint-N/
        return self.root / "adapter"

    @property
    def prepared(self) -> Path:  # axolotl's tokenized dataset
        return self.root / "prepared"

    @property
    def lock(self) -> Path:  # held by the live trainer, naming its pid and Dagster run
        return self.root / "trainer.lock"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss_curve.png"

    @property
    def training_set(self) -> Path:  # the train split's example ids and source URIs (lib/train/training_set.py)
        return self.root / "training_set.parquet"

    @property
    def merged(self) -> Path:  # the adapter merged into its base model
        return self.root / "merged"

    def failure(self, dagster_run: str) -> Path:  # a failure the trainer could explain
        return self.root / f"failure-{dagster_run}.json"


@dataclass(frozen=True)
class TrainPaths:
    """``train/``: a folder per run, and ``latest.json`` naming the newest finished one (written atomically when it
    completes: lib/handoffs.TrainingOutcome)."""

    root: Path

    @property
    def latest(self) -> Path:
        return self.root / "latest.json"

    def write_latest(self, outcome: TrainingOutcome) -> None:
        outcome.write(self.latest)

    def read_latest(self) -> TrainingOutcome | None:
        return TrainingOutcome.read(self.latest)

    def run(self, run_id: str) -> RunPaths:
        return RunPaths(self.root / run_id)

    def runs(self) -> list[RunPaths]:
        return [RunPaths(p) for p in sorted(self.root.glob("*/"))] if self.root.exists() else []


@dataclass(frozen=True)
class EvaluationPaths:
    """One evaluation: the generations of one set of settings (its folder is named by their fingerprint)."""

    root: Path

    @property
    def settings(self) -> Path:  # what was asked: sampling, models, adapter, dataset, examples
        return self.root / "settings.json"

    @property
    def generations_log(self) -> Path:  # one JSON line per finished answer, appended as it comes (resume)
        return self.root / "generations.jsonl"

    @property
    def generations(self) -> Path:  # the whole table, written at the end
        return self.root / "generations.parquet"

    @property
    def server_log(self) -> Path:
        return self.root / "vllm.log"

    @property
    def report(self) -> Path:  # report.json: every metric, interval and gate
        return self.root / "report.json"

    @property
    def report_markdown(self) -> Path:
        return self.root / "report.md"

    @property
    def length_plot(self) -> Path:
        return self.root / "lengths.png"

    @property
    def metric_plot(self) -> Path:
        return self.root / "metrics.png"

    @property
    def review(
        self,
    ) -> Path:  # the blind review: pack.json, key.json, review.md/.csv, ratings/<rater>.json, results.json
        return self.root / "review"


@dataclass(frozen=True)
class ShadowDayPaths(EvaluationPaths):
    """One UTC day of the shadow run: the agent's replies that day, each answered by the served model and the
    candidate (the generations files and the report are evaluation's, so its code reads them)."""

    @property
    def day(self) -> str:  # YYYY-MM-DD
        return self.root.name

    @property
    def replies(self) -> Path:  # the day's turns as evaluation reads held-out ones: id, thread, time, prompt, calls
        return self.root / "replies.parquet"

    @property
    def skipped(self) -> Path:  # {"reason": ...}: why this day was not answered (no served model, no reply)
        return self.root / "skipped.json"

    @property
    def trend_plot(self) -> Path:  # the report's metrics day by day, up to this one
        return self.root / "trend.png"

    @property
    def similarity_answers(self) -> Path:  # each answer beside its real reply, for the trainer-side similarity
        return self.root / "answers.jsonl"

    @property
    def model_measures(self) -> Path:  # the similarity the trainer environment measured (per model, per answer)
        return self.root / "model_measures.json"


@dataclass(frozen=True)
class ShadowPaths:
    """``shadow/``: a folder per UTC day (shadow_replies, shadow_report)."""

    root: Path

    def day(self, day: str) -> ShadowDayPaths:
        return ShadowDayPaths(self.root / day)

    def days(self) -> list[str]:
        """The days with a folder, oldest first."""
        return sorted(p.name for p in self.root.glob("????-??-??") if p.is_dir()) if self.root.exists() else []


@dataclass(frozen=True)
class EvaluatePaths:
    """``evaluate/``: a folder per set of settings, and ``latest.json`` naming the newest (EvaluationPointer)."""

    root: Path

    @property
    def latest(self) -> Path:
        return self.root / "latest.json"

    def write_latest(self, pointer: EvaluationPointer) -> None:
        pointer.write(self.latest)

    def read_latest(self) -> EvaluationPointer | None:
        return EvaluationPointer.read(self.latest)

    def evaluation(self, fingerprint: str) -> EvaluationPaths:
        return EvaluationPaths(self.root / fingerprint)


@dataclass(frozen=True)
class BundlePaths(DatasetPaths):
    """One serving bundle: everything a server and the reference client need, copied so the bundle outlives the
    training run and the dataset it came from (system_prompt.txt, tools.json, prompt_template.* as a dataset has)."""

    @property
    def manifest(self) -> Path:  # bundle.json: base model, parser, served name, sampling, where it came from
        return self.root / "bundle.json"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def chat_template(self) -> Path:
        return self.root / "chat_template.jinja"


@dataclass(frozen=True)
class ExportPaths:
    """One training run's merged model exported for other runtimes (``serve/exports/<run>/``): per output type,
    the GGUF, what it read back as, and an Ollama Modelfile beside it."""

    root: Path

    def gguf(self, outtype: str) -> Path:  # f16 | q8_0
        return self.root / f"model-{outtype}.gguf"

    def report(self, outtype: str) -> Path:  # the GGUF read back: architecture, tensors, tokenizer, chat template
        return self.root / f"model-{outtype}.json"

    def modelfile(self, outtype: str) -> Path:  # ollama create NAME -f model-<outtype>.Modelfile
        return self.root / f"model-{outtype}.Modelfile"


@dataclass(frozen=True)
class ServePaths:
    root: Path

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    def bundle(self, version: int) -> BundlePaths:
        return BundlePaths(self.bundles / f"v{version:04d}")

    def versions(self) -> list[int]:
        found = self.bundles.glob("v[0-9][0-9][0-9][0-9]*/bundle.json") if self.bundles.exists() else []
        return sorted(int(p.parent.name[1:]) for p in found if p.parent.name[1:].isdigit())

    @property
    def current(self) -> Path:  # {"version": N}
        return self.root / "current.json"

    @property
    def server_state(self) -> Path:  # the managed server: pid, url, models, log
        return self.root / "server.json"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    def export(self, run: str) -> ExportPaths:  # the training run's folder name (train/<run>/)
        return ExportPaths(self.exports / run)


@dataclass(frozen=True)
class AgentLayout:
    root: Path
    name: str

    @property
    def record_path(self) -> Path:
        return self.root / "agent.json"

    @property
    def ingest(self) -> IngestPaths:
        return IngestPaths(self.root / "ingest")

    @property
    def curate(self) -> CuratePaths:
        return CuratePaths(self.root / "curate")

    @property
    def train(self) -> TrainPaths:
        return TrainPaths(self.root / "train")

    @property
    def evaluate(self) -> EvaluatePaths:
        return EvaluatePaths(self.root / "evaluate")

    @property
    def serve(self) -> ServePaths:
        return ServePaths(self.root / "serve")

    @property
    def shadow(self) -> ShadowPaths:
        return ShadowPaths(self.root / "shadow")

    def read_record(self) -> AgentRecord | None:
        if not self.record_path.exists():
            return None
        try:
            return AgentRecord(**json.loads(self.record_path.read_text()))
        except (ValueError, TypeError):
            return None

    def write_record(self, record: AgentRecord) -> None:
        write_text_atomic(self.record_path, json.dumps(asdict(record), indent=2))


@dataclass(frozen=True)
class DataLayout:
    root: Path

    def agent(self, name: str) -> AgentLayout:
        if error := agent_name_error(name):
            raise ValueError(error)
        return AgentLayout(self.root / "agents" / name, name)

    def identity_cache(self, plc_url: str) -> Path:
        """DID documents cached per PLC directory (a devnet's PLC is a different world from the real one)."""
        return self.root / "identity" / f"did-documents-{hashlib.sha256(plc_url.encode()).hexdigest()[:10]}.json"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def devnet(self) -> Path:
        """The local test world's state (void_pipeline/testworld owns what is inside)."""
        return self.root / "devnet"

    @property
    def demo_settings(self) -> Path:
        """The VOID_* settings `make demo` used, for `make ui` to open on the demo's agent and data."""
        return self.root / "demo.env"

    @property
    def demo_log(self) -> Path:
        """`make demo`'s log: every line of the libraries, converters and servers it runs (its console tells the story)."""
        return self.root / "demo.log"

    def earlier_layout_exports(self) -> list[Path]:
        """Folders of the layout before agents/ (``<data>/ingest/did_*``): reported, never read."""
        legacy = self.root / "ingest"
        return sorted(p for p in legacy.glob("did_*") if p.is_dir()) if legacy.exists() else []
