"""eval_generations and eval_report: the held-out threads answered by the base model and the trained adapter
through a real vLLM server, then compared with the agent's real replies, with the gates serving waits on."""

import json
import math
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from void_pipeline.defs.agent import latest_training, recorded_agent
from void_pipeline.defs.automation import AFTER_NEW_ADAPTER, WHEN_INPUTS_CHANGE
from void_pipeline.defs.curate.assets import chat_dataset
from void_pipeline.defs.metadata import OWNERS
from void_pipeline.defs.run_slots import record_dead_worker
from void_pipeline.defs.train.assets import GPU_STEP_TAGS, lora_adapter, run_external
from void_pipeline.lib import processes
from void_pipeline.lib.curate.request import dataset_profile
from void_pipeline.lib.evaluate import evaluation
from void_pipeline.lib.evaluate.authorship import AuthorshipClassifier
from void_pipeline.lib.evaluate.generations import fingerprint, generate, settings_record
from void_pipeline.lib.evaluate.judge import Judge, judge_answers
from void_pipeline.lib.evaluate.report import Gates, build_report, length_plot, metric_plot
from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.layout import DatasetPaths, EvaluationPaths, RunPaths
from void_pipeline.lib.report import markdown_table
from void_pipeline.lib.serve.client import Sampling
from void_pipeline.lib.serve.vllm_server import ServerFailed
from void_pipeline.lib.train import tracking
from void_pipeline.lib.train.tracking import default_uri
from void_pipeline.resources.server import InferenceServer
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer

MODELS = ("base", "tuned")


class EvalGenerationsConfig(dg.Config):
    limit: int = Field(default=200, description="held-out examples answered (a seeded random choice)")
    samples: int = Field(default=1, description="answers per prompt and model")
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = Field(default=200, description="per request: one post")
    max_posts: int = Field(default=6, description="reply calls in one answer before the loop stops it")
    seed: int = 0
    concurrency: int = Field(default=8, description="requests in flight")


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
    dataset = Path(latest.get("dataset") or layout.curate.latest_dataset() or "")
    files = DatasetPaths(dataset)
    dtype, env, arguments = server.engine()
    try:
        heldout = evaluation.heldout(dataset)
        spec = evaluation.server_spec(latest, dtype, env, server.context_length(), arguments)
    except evaluation.CannotEvaluate as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    prompts = evaluation.choose_prompts(heldout, config.limit, config.seed)
    sampling = Sampling(
        config.temperature, config.top_p, config.max_tokens, config.seed, config.samples, config.max_posts
    )
    settings = settings_record(
        sampling,
        models=list(MODELS),
        adapter=latest["adapter"],
        base_model=latest["base_model"],
        dataset=str(dataset),
        dataset_sha256=latest.get("dataset_sha256"),
        examples=[p.example_id for p in prompts],
    )
    paths = layout.evaluate.evaluation(fingerprint(settings))
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(paths.settings, json.dumps(settings, indent=2))
    context.log.info(f"{len(prompts)} held-out prompts x {list(MODELS)} x {config.samples}; folder {paths.root}")

    with processes.bound_to_run_worker(record_dead_worker(context)):
        try:
            with server.serving(spec, paths.server_log, context.log.info) as running:
                context.log.info(f"vLLM up in {running.started_s:.0f} s at {running.url}: {running.models}")
                run = generate(
                    paths,
                    running.base_url,
                    running.api_key,
                    list(MODELS),
                    dataset_profile(files.request, files.system_prompt, files.tools),
                    prompts,
                    sampling,
                    config.concurrency,
                    context.log.info,
                )
        except ServerFailed as err:
            raise dg.Failure(str(err), metadata={"server_log": dg.MetadataValue.path(str(paths.server_log))}) from err
    errors = run.rows.filter(pl.col("error").is_not_null())
    layout.evaluate.write_latest(
        folder=str(paths.root),
        run_dir=latest["run_dir"],
        base_model=latest["base_model"],
        adapter=latest["adapter"],
        dataset=str(dataset),
        mlflow_run=latest.get("mlflow_run"),
        model_version=latest.get("model_version"),
        config=latest.get("config"),
    )
    per_model = run.rows.group_by("model").agg(
        pl.len().alias("answers"),
        pl.col("posts").list.len().mean().alias("posts_per_answer"),
        pl.col("completion_tokens").sum().alias("completion_tokens"),
        pl.col("latency_s").mean().alias("latency_s_mean"),
    )
    return dg.MaterializeResult(
        metadata={
            "folder": dg.MetadataValue.path(str(paths.root)),
            "answers": run.rows.height,
            "generated_now": run.generated,
            "kept_from_an_earlier_run": run.reused,
            "errors": errors.height,
            "seconds": round(run.seconds, 1),
            "answers_per_s": round(run.generated / run.seconds, 3) if run.seconds and run.generated else 0.0,
            "per_model": dg.MetadataValue.md(markdown_table(per_model.sort("model"), rows=10)),
            "sample": dg.MetadataValue.md(sample_markdown(run.rows, heldout)),
            "sampling": dg.MetadataValue.json(settings["sampling"]),
            "server_log": dg.MetadataValue.path(str(paths.server_log)),
            "tool_call_parser": spec.tool_call_parser,
            "chat_template": spec.chat_template or "the tokenizer's",
        }
    )


def sample_markdown(rows: pl.DataFrame, heldout: pl.DataFrame, examples: int = 3) -> str:
    real = evaluation.real_answers(heldout)
    lines = []
    for example_id in sorted(set(rows["example_id"].to_list()))[:examples]:
        lines.append(f"**{example_id}**\n")
        lines.append(f"- real: {' / '.join(real.get(example_id, []))[:400]}")
        for model in MODELS:
            posts = rows.filter((pl.col("example_id") == example_id) & (pl.col("model") == model))["posts"]
            text = " / ".join(posts[0]) if posts.len() else ""
            lines.append(f"- {model}: {text[:400] or '(no call)'}")
        lines.append("")
    return "\n".join(lines)


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
    judge_key_env: str = Field(default="VOID_JUDGE_API_KEY", description="environment variable holding its key")
    judge_threads: int = Field(default=50, description="held-out threads the judge compares")


GATE_CHECKS = ("tool_call_validity", "character_sheet_rate")


@dg.asset(
    deps=[eval_generations],
    group_name="evaluate",
    owners=OWNERS,
    kinds={"mlflow", "scikitlearn"},
    check_specs=[
        *(dg.AssetCheckSpec(name, asset="eval_report", blocking=True) for name in GATE_CHECKS),
        dg.AssetCheckSpec("tuned_beats_base", asset="eval_report"),
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
    latest = layout.evaluate.read_latest()
    if latest is None:
        raise dg.Failure("no generations yet: materialize eval_generations first", allow_retries=False)
    paths = EvaluationPaths(Path(latest["folder"]))
    if not paths.generations.exists():
        raise dg.Failure(
            f"no generations in {paths.root} ({paths.generations.name} is missing): materialize eval_generations",
            allow_retries=False,
        )
    generations = pl.read_parquet(paths.generations)
    heldout = evaluation.heldout(Path(latest["dataset"]))
    classifier, why_not = None, None
    try:
        agent_posts, other_posts = evaluation.authorship_corpus(
            Path(latest["dataset"]), pl.read_parquet(layout.ingest.thread_context), record.did
        )
        classifier = AuthorshipClassifier.fit(agent_posts, other_posts, config.seed)
    except (ValueError, OSError) as err:
        why_not = str(err)
        context.log.warning(f"authorship not measured: {why_not}")
    measured = model_measures(context, pipes_subprocess_client, trainer, latest, paths, heldout, generations)
    gates = Gates(config.min_call_validity, config.max_character_sheet_per_1000)
    report = build_report(
        generations,
        evaluation.real_answers(heldout),
        classifier,
        gates,
        heldout_loss=measured.get("heldout_loss"),
        similarity=measured.get("similarity"),
    )
    data = report.as_dict()
    write_text_atomic(paths.report, json.dumps(data, indent=2, default=str))
    write_text_atomic(paths.report_markdown, report.markdown())
    real = [posts for e, posts in evaluation.real_answers(heldout).items() if e in set(generations["example_id"])]
    length_plot(generations, real, paths.length_plot)
    metric_plot(report, paths.metric_plot)
    reviewed = evaluation.review_pack(heldout, generations, paths.review, config.review_threads, config.seed)
    judged = None
    if config.judge_url:
        judge = Judge(config.judge_url.rstrip("/"), config.judge_model, config.judge_key_env)
        threads, answers = evaluation.judge_inputs(heldout, generations, config.judge_threads)
        judged = judge_answers(judge, threads, answers).as_dict()
        data["judge"] = {"url": config.judge_url, "model": config.judge_model, **judged}
        write_text_atomic(paths.report, json.dumps(data, indent=2, default=str))
    tracked = track(latest, report.headline(), report, paths, trainer, storage)
    context.log.info("\n" + report.markdown())
    yield dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(report.markdown()),
            "examples": report.examples,
            "samples_per_prompt": report.samples,
            "tuned_wins": dg.MetadataValue.json(report.wins()),
            "authorship": dg.MetadataValue.json(report.authorship or {"not_measured": why_not}),
            "length_plot": dg.MetadataValue.path(str(paths.length_plot)),
            "metric_plot": dg.MetadataValue.path(str(paths.metric_plot)),
            "report_json": dg.MetadataValue.path(str(paths.report)),
            "review_pack": dg.MetadataValue.path(str(paths.review / "review.md")),
            "review_threads": reviewed,
            "mlflow": tracked,
            "judge": dg.MetadataValue.json(judged or {"off": "set judge_url to compare answers with an LLM judge"}),
        }
    )
    for name in GATE_CHECKS:
        passed, why = report.blocking.get(name, (False, "not measured"))
        yield dg.AssetCheckResult(check_name=name, passed=passed, metadata={"why": why})
    warnings = report.warnings
    yield dg.AssetCheckResult(
        check_name="tuned_beats_base",
        passed=all(passed for passed, _ in warnings.values()),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={name: why for name, (_, why) in warnings.items()} or {"why": "nothing to compare"},
    )


def model_measures(
    context: dg.AssetExecutionContext,
    client: dg.PipesSubprocessClient,
    trainer: Trainer,
    latest: dict[str, Any],
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
        RunPaths(Path(latest["run_dir"])),
        {
            "base_model": latest["base_model"],
            "adapter": latest["adapter"],
            "rows": str(rows_path),
            "answers": str(answers_path),
            "output": str(output),
        },
    )
    return dict(json.loads(output.read_text())) if output.exists() else {}


def track(
    latest: dict[str, Any],
    headline: dict[str, float],
    report: Any,
    paths: EvaluationPaths,
    trainer: Trainer,
    storage: PipelineStorage,
) -> str:
    """The report's files as artifacts of the training's MLflow run; the headline metrics as tags of its registered
    model version, with the alias ``champion`` when every blocking gate passes, ``candidate`` otherwise."""
    if not latest.get("mlflow_run"):
        return "no MLflow run recorded for this adapter"
    passed = all(p for p, _ in report.blocking.values())
    alias = "champion" if passed else "candidate"
    tracking.record_evaluation(
        trainer.tracking_uri or default_uri(storage.layout.mlflow),
        str(latest["mlflow_run"]),
        trainer.registered_model,
        latest.get("model_version"),
        {k: v for k, v in headline.items() if not math.isnan(v)},
        [paths.report, paths.report_markdown, paths.length_plot, paths.metric_plot],
        alias,
    )
    return f"run {latest['mlflow_run']}, {trainer.registered_model} v{latest.get('model_version')} → {alias}"
