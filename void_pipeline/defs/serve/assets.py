"""served_model: a passing adapter promoted to a versioned serving bundle, made current, loaded into the running
server without a restart, and smoke-tested through the reference client."""

import contextlib
import shutil
import time
from collections.abc import Iterator
from typing import Any, NoReturn

import dagster as dg
import httpx
import polars as pl
from pydantic import Field

from void_pipeline.defs.agent import recorded_agent
from void_pipeline.defs.automation import WHEN_GATES_PASS
from void_pipeline.defs.evaluate.assets import eval_report
from void_pipeline.defs.external import bound_to_run_worker
from void_pipeline.defs.metadata import OWNERS, as_metadata
from void_pipeline.lib.evaluate import evaluation
from void_pipeline.lib.evaluate.evaluation import SmokeCase
from void_pipeline.lib.handoffs import HandoffError, ServingOutcome, TrainingOutcome
from void_pipeline.lib.ingest.xrpc import auth_header
from void_pipeline.lib.layout import DatasetPaths, EvaluationPaths, ServePaths
from void_pipeline.lib.report import Url
from void_pipeline.lib.serve import managed
from void_pipeline.lib.serve.bundle import (
    Bundle,
    NotServable,
    Promotion,
    add_bundle,
    current_version,
    make_current,
    passed_evaluation,
    read_bundle,
    server_spec,
)
from void_pipeline.lib.serve.client import Answer, Endpoint, EndpointError, Sampling, agent_loop
from void_pipeline.lib.serve.metadata import served_metadata
from void_pipeline.lib.serve.vllm_server import ServerFailed, ServerSpec, load_adapter
from void_pipeline.lib.train import tracking
from void_pipeline.lib.train.tracking import default_uri
from void_pipeline.resources.server import InferenceServer
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer


class ServedModelConfig(dg.Config):
    served_model_name: str = Field(default="", description="the model name clients ask for; default: the agent's")
    temperature: float = Field(default=0.7, description="sampling defaults recorded in the bundle")
    top_p: float = 0.95
    max_tokens: int = Field(default=200, description="per request: one post")
    max_posts: int = Field(default=6, description="reply calls in one answer before the client stops asking")
    seed: int = 0


@dg.asset(
    deps=[eval_report],
    group_name="serve",
    owners=OWNERS,
    kinds={"vllm", "mlflow"},
    pool="gpu",
    check_specs=[
        dg.AssetCheckSpec(
            "smoke_answer_valid",
            asset="served_model",
            description="The promoted bundle, served, answers a held-out thread it answered validly in evaluation "
            "with a valid reply again (same sampling and seed); an invalid answer rolls back to the previous bundle.",
        )
    ],
    description="The evaluated adapter, when it passed its blocking gates, promoted to a versioned serving bundle "
    "(adapter, chat template, prompt template, system prompt, tools, sampling), made current, aliased 'production' "
    "in MLflow, loaded into the running server without a restart, and smoke-tested through the reference client.",
    automation_condition=WHEN_GATES_PASS,
)
def served_model(
    context: dg.AssetExecutionContext,
    config: ServedModelConfig,
    storage: PipelineStorage,
    server: InferenceServer,
    trainer: Trainer,
) -> Iterator[Any]:
    _, layout = recorded_agent(storage)
    try:
        training = layout.train.read_latest()
        evaluated = passed_evaluation(training, layout.evaluate.read_latest())
        assert training is not None
        trained = evaluation.server_spec(training, "auto", {})  # the family's parser, the adapter's rank
    except (NotServable, evaluation.CannotEvaluate, HandoffError) as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    serve, previous = layout.serve, current_version(layout.serve)
    bundle = add_bundle(serve, promotion(context, config, storage, trainer, training, evaluated, trained))
    make_current(serve, bundle.version)
    context.log.info(f"bundle v{bundle.version:04d} is current ({bundle.paths.root}); previous: v{previous}")
    case = evaluation.smoke_case(evaluated, pl.read_parquet(DatasetPaths(training.dataset).heldout))
    if case is None:  # the gates passed, so this is an evaluation folder damaged since
        roll_back(serve, server, bundle, previous, f"has no valid evaluated answer in {evaluated.root} to smoke-test")
    try:
        with bound_to_run_worker(context):
            served = serve_and_smoke(context, serve, bundle, server, case)
    except (ServerFailed, EndpointError) as err:
        roll_back(serve, server, bundle, previous, f"could not be served ({err})")
    answer = served.answer
    if problems := answer.problems():  # evaluation's rule, asked as the handler asks: never promote an invalid one
        said = " / ".join(answer.posts) or answer.content or "(nothing)"
        roll_back(
            serve, server, bundle, previous, f"gave no valid smoke answer ({'; '.join(problems)}: {said[:200]!r})"
        )
    production = mark_production(training, bundle, trainer)
    metadata = served_metadata(bundle, previous, served, case, production, layout)
    yield dg.MaterializeResult(metadata=as_metadata(metadata))
    yield dg.AssetCheckResult(
        check_name="smoke_answer_valid",
        passed=True,  # an invalid one failed the step above, with the previous bundle current again
        metadata={"problems": "none", "posts": len(answer.posts)},
    )


def promotion(
    context: dg.AssetExecutionContext,
    config: ServedModelConfig,
    storage: PipelineStorage,
    trainer: Trainer,
    training: TrainingOutcome,
    evaluated: EvaluationPaths,
    trained: ServerSpec,
) -> Promotion:
    """The bundle's parts (the trained adapter, its dataset's prompt, system prompt and tools) and where they came
    from: the training run, its evaluation, its MLflow model version and this Dagster run."""
    return Promotion(
        base_model=training.base_model,
        adapter=training.adapter,
        dataset=training.dataset,
        served_model_name=config.served_model_name or storage.agent,
        tool_call_parser=trained.tool_call_parser,
        lora_rank=trained.lora_rank,
        sampling=Sampling(config.temperature, config.top_p, config.max_tokens, config.seed, 1, config.max_posts),
        source={
            "run_dir": str(training.run_dir),
            "config": str(training.config),
            "evaluation": str(evaluated.root),
            "mlflow_run": training.mlflow_run,
            "registered_model": trainer.registered_model if training.model_version else None,
            "tracking_uri": trainer.tracking_uri or default_uri(storage.layout.mlflow),
            "model_version": training.model_version,
            "dagster_run": context.run.run_id,
        },
    )


def mark_production(training: TrainingOutcome, bundle: Bundle, trainer: Trainer) -> dict[str, Any]:
    """The adapter's registered model version aliased ``production`` in MLflow, and a link to it in the MLflow UI
    (the metadata's ``mlflow`` entries)."""
    if not training.model_version:
        return {"mlflow": "no registered model version for this adapter"}
    uri, name, version = bundle.source["tracking_uri"], trainer.registered_model, str(training.model_version)
    tracking.set_alias(uri, name, version, "production")
    link = tracking.model_version_link(uri, name, version, trainer.ui_url)
    return {"mlflow": f"{name} v{version} → production", "mlflow_model_version": Url(link)}


def roll_back(serve: ServePaths, server: InferenceServer, bundle: Bundle, previous: int | None, why: str) -> NoReturn:
    """Nothing half-done: the previous bundle is current (and served) again, or none is, and the failed bundle is
    removed (nobody can promote it later); then fail the step."""
    if previous is not None:
        make_current(serve, previous)
        with contextlib.suppress(ServerFailed, EndpointError, OSError, managed.AlreadyRunning):
            restore_previous(serve, server, previous)
    else:
        serve.current.unlink(missing_ok=True)
    shutil.rmtree(bundle.paths.root, ignore_errors=True)
    after = f"v{previous:04d} is current again" if previous else "no bundle is current"
    raise dg.Failure(f"bundle v{bundle.version:04d} {why}; it is removed and {after}", allow_retries=False)


def served_base(url: str, key: str | None) -> str | None:
    """The base model a running server serves (its ``root`` in /v1/models)."""
    listed = httpx.get(f"{url}/v1/models", headers=auth_header(key), timeout=30.0)
    if listed.status_code != 200:
        raise ServerFailed(f"{url}/v1/models answered {listed.status_code}: is {managed.API_KEY_ENV} its key?")
    roots = [m.get("root") for m in listed.json().get("data", []) if not m.get("parent")]
    return str(roots[0]) if roots else None


def serve_and_smoke(
    context: dg.AssetExecutionContext, serve: ServePaths, bundle: Bundle, server: InferenceServer, case: SmokeCase
) -> ServingOutcome:
    """Load the bundle where it is served (in place when the base is the same, a clean restart of the managed
    server when it is not, a temporary server when none runs), then answer one held-out thread through it."""
    url, is_managed = managed.running_endpoint(serve, server.endpoint_url)
    key = server.api_key()
    dtype, env, arguments = server.engine()
    spec = server_spec(bundle, dtype, env, server.context_length(), tuple(arguments))
    assert bundle.adapter is not None
    if url is not None:
        if served_base(url, key) == bundle.base_model:
            load_adapter(url, key, bundle.served_model_name, bundle.adapter)
            managed.record_loaded(serve, url, bundle.served_model_name, bundle.adapter, bundle.version)
            how = "adapter loaded into the running server without a restart"
        elif is_managed:
            state = managed.ServerState.read(serve)
            port = int(url.rsplit(":", 1)[1])
            context.log.info(f"the running server serves another base model: restarting it on port {port}")
            managed.down(serve)
            spec = server_spec(bundle, dtype, env, server.context_length(), tuple(arguments), port=port)
            managed.up(
                serve, server.interpreter(), spec, key, bundle.version, server.startup_timeout_s, context.log.info
            )
            how = f"managed server restarted on the new base (was pid {state.pid if state else '?'})"
        else:
            raise ServerFailed(f"{url} serves another base model than {bundle.base_model}: restart it with serve up")
        answer, models = smoke(url, key, bundle, case)
        return ServingOutcome(url, True, how, answer, models)
    with server.serving(spec, serve.root / "smoke-server.log", context.log.info) as running:
        answer, models = smoke(running.url, running.api_key, bundle, case)
    how = "no server was running: smoke-tested on a temporary one (void-pipeline serve up keeps one running)"
    return ServingOutcome(running.url, False, how, answer, models)


def smoke(url: str, key: str | None, bundle: Bundle, case: SmokeCase) -> tuple[Answer, list[str]]:
    """The bundle's answer to a thread the evaluation saw it answer validly, asked as the handler asks (no forced
    retry: the model's own answer is judged) with the evaluation's sampling and seed."""
    endpoint = Endpoint(f"{url}/v1", key or "", bundle.served_model_name, timeout_s=300.0)
    started = time.monotonic()
    with httpx.Client() as client:
        answer = agent_loop(
            client, endpoint, bundle.request(), case.prompt, case.sampling, case.example_id, when=case.when
        )
        listed = client.get(f"{url}/v1/models", headers=endpoint.headers(), timeout=30.0)
    models = [m["id"] for m in listed.json().get("data", [])] if listed.status_code == 200 else []
    answer.latency_s = round(time.monotonic() - started, 3)
    return answer, models


def restore_previous(serve: ServePaths, server: InferenceServer, previous: int) -> None:
    url, is_managed = managed.running_endpoint(serve, server.endpoint_url)
    earlier = read_bundle(serve.bundle(previous))
    if url is None or not earlier.adapter:
        return
    if served_base(url, server.api_key()) == earlier.base_model:
        load_adapter(url, server.api_key(), earlier.served_model_name, earlier.adapter)
        managed.record_loaded(serve, url, earlier.served_model_name, earlier.adapter, previous)
    elif is_managed:  # the failed bundle restarted it on its own base: back on the previous bundle's
        dtype, env, arguments = server.engine()
        port = int(url.rsplit(":", 1)[1])
        spec = server_spec(earlier, dtype, env, server.context_length(), tuple(arguments), port=port)
        managed.down(serve)
        managed.up(serve, server.interpreter(), spec, server.api_key(), previous, server.startup_timeout_s)
