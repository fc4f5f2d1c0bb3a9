"""eval_generations and eval_report: the held-out threads answered by the base model and the trained adapter
through a real vLLM server, then compared with the agent's real replies, with the gates serving waits on."""

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from void_pipeline.defs.agent import latest_training, recorded_agent
from void_pipeline.defs.automation import AFTER_NEW_ADAPTER, WHEN_INPUTS_CHANGE
from void_pipeline.defs.curate.assets import chat_dataset
from void_pipeline.defs.external import GPU_STEP_TAGS, bound_to_run_worker, run_external
from void_pipeline.defs.metadata import OWNERS, as_metadata
from void_pipeline.defs.train.assets import lora_adapter
from void_pipeline.lib.curate.request import RequestProfile, dataset_profile
from void_pipeline.lib.evaluate import evaluation
from void_pipeline.lib.evaluate.authorship import AuthorshipClassifier
from void_pipeline.lib.evaluate.generations import GenerationRun, Prompt, fingerprint, generate, settings_record
from void_pipeline.lib.evaluate.judge import Judge
from void_pipeline.lib.evaluate.metadata import (
    MODELS,
    generations_metadata,
    report_metadata,
    thread_table,
    tracking_metadata,
)
from void_pipeline.lib.evaluate.report import EvalReport, Gates, build_report, write_report
from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.handoffs import EvaluationPointer, HandoffError
from void_pipeline.lib.layout import AgentLayout, DatasetPaths, EvaluationPaths, RunPaths
from void_pipeline.lib.serve.client import Sampling
from void_pipeline.lib.serve.vllm_server import ServerFailed, ServerSpec
from void_pipeline.lib.settings import JUDGE_API_KEY_ENV
from void_pipeline.lib.train import tracking
from void_pipeline.lib.train.tracking import default_uri
from void_pipeline.resources.server import InferenceServer
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer


class EvalGenerationsConfig(dg.Config):
    limit: int = Field(default=200, description="held-out examples answered (a seeded random choice)")
    samples: int = Field(default=1, description="answers per prompt and model")
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = Field(default=200, description="per request: one post")
    max_posts: int = Field(default=6, description="reply calls in one answer before the loop stops it")
    seed: int = 0
    concurrency: int = Field(default=8, description="requests in flight")

    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_p, self.max_tokens, self.seed, self.samples, self.max_posts)


def generate_on_vllm(
    context: dg.AssetExecutionContext,
    server: InferenceServer,
    spec: ServerSpec,
    paths: EvaluationPaths,
    profile: RequestProfile,
    models: list[str],
    prompts: list[Prompt],
    sampling: Sampling,
    concurrency: int,
) -> GenerationRun:
    """The prompts answered by ``models`` (as ``profile`` asks) through a vLLM server started for this step (stopped
    after it, and with it when the run worker dies); a server that fails to start fails the step naming its log."""
    with bound_to_run_worker(context):
        try:
            with server.serving(spec, paths.server_log, context.log.info) as running:
                context.log.info(f"vLLM up in {running.started_s:.0f} s at {running.url}: {running.models}")
                return generate(
                    paths,
                    running.base_url,
                    running.api_key,
                    models,
                    profile,
                    prompts,
                    sampling,
                    concurrency,
                    context.log.info,
                )
        except ServerFailed as err:
            raise dg.Failure(str(err), metadata={"server_log": dg.MetadataValue.path(str(paths.server_log))}) from err


@dg.asset(
    deps=[lora_adapter, chat_dataset],
    group_name="evaluate",
    owners=OWNERS,
    kinds={"vllm"},
    pool="gpu",
    op_tags=GPU_STEP_TAGS,
    description="Held-out threads answered by the base model and by the trained adapter through vLLM's "
    "OpenAI-compatible server, with the handler's prompt, system prompt and reply tool; resumable.",
    automation_condition=AFTER_NEW_ADAPTER,
)
def eval_generations(
    context: dg.AssetExecutionContext, config: EvalGenerationsConfig, storage: PipelineStorage, server: InferenceServer
) -> dg.MaterializeResult:
    layout = recorded_agent(storage)[1]
    latest = latest_training(layout)
    dtype, env, arguments = server.engine()
    try:
        heldout = evaluation.heldout(latest.dataset)
        spec = evaluation.server_spec(latest, dtype, env, server.context_length(), arguments)
    except evaluation.CannotEvaluate as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    prompts = evaluation.choose_prompts(heldout, config.limit, config.seed)
    settings = settings_record(
        config.sampling(),
        models=list(MODELS),
        adapter=str(latest.adapter),
        base_model=latest.base_model,
        dataset=str(latest.dataset),
        dataset_sha256=latest.dataset_sha256,
        examples=[p.example_id for p in prompts],
    )
    paths = layout.evaluate.evaluation(fingerprint(settings))
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(paths.settings, json.dumps(settings, indent=2))
    context.log.info(f"{len(prompts)} held-out prompts x {list(MODELS)} x {config.samples}; folder {paths.root}")
    files = DatasetPaths(latest.dataset)
    profile = dataset_profile(files.request, files.system_prompt, files.tools)
    run = generate_on_vllm(
        context, server, spec, paths, profile, list(MODELS), prompts, config.sampling(), config.concurrency
    )
    layout.evaluate.write_latest(EvaluationPointer.of(paths.root, latest))
    return dg.MaterializeResult(
        metadata=as_metadata(generations_metadata(run, heldout, paths, settings["sampling"], spec))
    )


class EvalReportConfig(dg.Config):
    min_call_validity: float = Field(
        default=0.9, description="gate (blocking): the share of tuned answers with only valid reply calls; above 0"
    )
    max_character_sheet_per_1000: float = Field(default=5.0, description="gate (blocking): loop content rate")
    review_threads: int = Field(default=50, description="threads in the blind review pack")
    seed: int = 0
    judge_url: str | None = Field(
        default=None, description="optional LLM judge: an OpenAI-compatible base URL ending in /v1 (off when unset)"
    )
    judge_model: str = Field(default="", description="the judge's model name at judge_url")
    judge_key_env: str = Field(default=JUDGE_API_KEY_ENV, description="environment variable holding its key")
    judge_threads: int = Field(default=50, description="held-out threads the judge compares")


# Each check's description in the UI; the thresholds are eval_report's config, shown with each result.
CHECK_DESCRIPTIONS = {
    "tool_call_validity": "Blocking gate: the share of the tuned model's answers that hold only valid reply calls "
    "(at least one, each post postable) is at least min_call_validity (default 0.9). served_model waits on it.",
    "character_sheet_rate": "Blocking gate: tuned answers with character-sheet content (the loop failure) per 1,000 "
    "answers are at most max_character_sheet_per_1000 (default 5). served_model waits on it.",
    "tuned_beats_base": "Warning: the tuned model beats the base on the authorship classifier's pass share (higher) "
    "and on the held-out loss of the agent's real replies (lower).",
}
GATE_CHECKS = ("tool_call_validity", "character_sheet_rate")


@dg.asset(
    deps=[eval_generations],
    group_name="evaluate",
    owners=OWNERS,
    kinds={"mlflow", "scikitlearn"},
    check_specs=[
        *(
            dg.AssetCheckSpec(name, asset="eval_report", blocking=True, description=CHECK_DESCRIPTIONS[name])
            for name in GATE_CHECKS
        ),
        dg.AssetCheckSpec("tuned_beats_base", asset="eval_report", description=CHECK_DESCRIPTIONS["tuned_beats_base"]),
    ],
    description="Base vs tuned vs the agent's real replies on the held-out threads: tool-call validity, length and "
    "lexical distances, authorship, failure modes; gates that serving waits on; a blind review pack.",
    automation_condition=WHEN_INPUTS_CHANGE,
)
def eval_report(
    context: dg.AssetExecutionContext,
    config: EvalReportConfig,
    storage: PipelineStorage,
    trainer: Trainer,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> Any:
    if not config.min_call_validity > 0:  # a demo may lower the gate, never to "no valid call at all"
        raise dg.Failure(
            f"min_call_validity {config.min_call_validity} would serve a model that never makes a valid reply call: "
            "give a share above 0 (the demo's lenient gate is 0.04)",
            allow_retries=False,
        )
    record, layout = recorded_agent(storage)
    latest, paths, generations = latest_generations(layout)
    heldout = evaluation.heldout(latest.dataset)
    classifier, why_not = authorship(context, latest.dataset, layout, record.did, config.seed)
    measured = model_measures(context, pipes_subprocess_client, trainer, latest, paths, heldout, generations)
    report = build_report(
        generations,
        evaluation.real_answers(heldout),
        classifier,
        Gates(config.min_call_validity, config.max_character_sheet_per_1000),
        heldout_loss=measured.get("heldout_loss"),
        similarity=measured.get("similarity"),
    )
    judge = Judge(config.judge_url.rstrip("/"), config.judge_model, config.judge_key_env) if config.judge_url else None
    reviewed, judged = write_report(
        report, paths, heldout, generations, config.review_threads, config.seed, judge, config.judge_threads
    )
    tracked = track(latest, report.headline(), report, paths, trainer, storage)
    context.log.info("\n" + report.markdown())
    threads = thread_table(generations, heldout)
    metadata = report_metadata(report, paths, threads, why_not, reviewed, tracked, judged)
    yield dg.MaterializeResult(metadata=as_metadata(metadata))
    yield from gate_results(report)


def latest_generations(layout: AgentLayout) -> tuple[EvaluationPointer, EvaluationPaths, pl.DataFrame]:
    """The newest evaluation eval_generations finished, its folder and its answers; a Failure saying what to
    materialize when there are none."""
    try:
        latest = layout.evaluate.read_latest()
    except HandoffError as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    if latest is None:
        raise dg.Failure("no generations yet: materialize eval_generations first", allow_retries=False)
    paths = EvaluationPaths(latest.folder)
    if not paths.generations.exists():
        raise dg.Failure(
            f"no generations in {paths.root} ({paths.generations.name} is missing): materialize eval_generations",
            allow_retries=False,
        )
    return latest, paths, pl.read_parquet(paths.generations)


def authorship(
    context: dg.AssetExecutionContext, dataset: Path, layout: AgentLayout, did: str, seed: int
) -> tuple[AuthorshipClassifier | None, str | None]:
    """The authorship classifier fitted on the agent's train replies against the other authors in those threads,
    or None and why it could not be."""
    try:
        agent_posts, other_posts = evaluation.authorship_corpus(
            dataset, pl.read_parquet(layout.ingest.thread_context), did
        )
        return AuthorshipClassifier.fit(agent_posts, other_posts, seed), None
    except (ValueError, OSError) as err:
        context.log.warning(f"authorship not measured: {err}")
        return None, str(err)


def gate_results(report: EvalReport) -> Iterator[dg.AssetCheckResult]:
    """The blocking gates serving waits on, then the warnings (tuned beats base) as one warning check."""
    for name in GATE_CHECKS:
        passed, why = report.blocking.get(name, (False, "not measured"))
        yield dg.AssetCheckResult(check_name=name, passed=passed, metadata={"why": why, **report.gate_numbers(name)})
    warnings = report.warnings
    numbers = {
        k: v
        for metric in (report.gates.tuned_must_beat_base if report.gates else ())
        for k, v in report.comparison_numbers(metric).items()
    }
    yield dg.AssetCheckResult(
        check_name="tuned_beats_base",
        passed=all(passed for passed, _ in warnings.values()),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={**({name: why for name, (_, why) in warnings.items()} or {"why": "nothing to compare"}), **numbers},
    )


def model_measures(
    context: dg.AssetExecutionContext,
    client: dg.PipesSubprocessClient,
    trainer: Trainer,
    latest: EvaluationPointer,
    paths: EvaluationPaths,
    heldout: pl.DataFrame,
    generations: pl.DataFrame,
) -> dict[str, Any]:
    """Held-out loss (base vs tuned) and semantic similarity to the real replies, measured in the trainer
    environment through Pipes (torch never enters the orchestrator). {} when the step cannot run."""
    rows_path, answers_path = evaluation.model_measure_inputs(paths, heldout, generations)
    output = paths.root / "model_measures.json"
    output.unlink(missing_ok=True)
    run_external(
        context,
        client,
        trainer,
        "void_pipeline.external.evaluate_models",
        RunPaths(latest.run_dir),
        {
            "base_model": latest.base_model,
            "adapter": str(latest.adapter),
            "rows": str(rows_path),
            "answers": str(answers_path),
            "output": str(output),
        },
    )
    return dict(json.loads(output.read_text())) if output.exists() else {}


def track(
    latest: EvaluationPointer,
    headline: dict[str, float],
    report: EvalReport,
    paths: EvaluationPaths,
    trainer: Trainer,
    storage: PipelineStorage,
) -> dict[str, Any]:
    """The report's files as artifacts of the training's MLflow run; the headline metrics as tags of its registered
    model version, with the alias ``champion`` when every blocking gate passes, ``candidate`` otherwise. Returns
    what the metadata says of it, with links to the run and the version."""
    if not latest.mlflow_run:
        return tracking_metadata(None, "no MLflow run recorded for this adapter", trainer.ui_url)
    passed = all(p for p, _ in report.blocking.values())
    alias = "champion" if passed else "candidate"
    tracked = tracking.record_evaluation(
        trainer.tracking_uri or default_uri(storage.layout.mlflow),
        latest.mlflow_run,
        trainer.registered_model,
        latest.model_version,
        {k: v for k, v in headline.items() if not math.isnan(v)},
        [paths.report, paths.report_markdown, paths.length_plot, paths.metric_plot],
        alias,
    )
    summary = f"run {latest.mlflow_run}, {trainer.registered_model} v{latest.model_version} → {alias}"
    return tracking_metadata(tracked, summary, trainer.ui_url)
