"""What an evaluation shows in the UI: plain values (defs/metadata.as_metadata shows them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from void_pipeline.lib.curate.prompt import post_answered
from void_pipeline.lib.evaluate import evaluation, review
from void_pipeline.lib.evaluate.generations import GenerationRun
from void_pipeline.lib.evaluate.metrics import valid_answer
from void_pipeline.lib.evaluate.report import EvalReport
from void_pipeline.lib.layout import EvaluationPaths
from void_pipeline.lib.report import Markdown, Table, Url, markdown_table
from void_pipeline.lib.serve.vllm_server import ServerSpec
from void_pipeline.lib.train.metadata import plot_markdown

if TYPE_CHECKING:  # mlflow is imported where an evaluation is tracked
    from void_pipeline.lib.train.tracking import TrackedRun

MODELS = ("base", "tuned")
THREADS_SHOWN = 25  # rows of the per-thread table: the first held-out threads by id (report.json has them all)
TEXT_SHOWN = 200  # characters of a post or an answer one table cell shows


def sample_markdown(rows: pl.DataFrame, heldout: pl.DataFrame, examples: int = 3) -> Markdown:
    """The first ``examples`` held-out threads: the agent's real reply beside each model's answer."""
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
    return Markdown("\n".join(lines))


def generations_metadata(
    run: GenerationRun, heldout: pl.DataFrame, paths: EvaluationPaths, sampling: dict[str, Any], spec: ServerSpec
) -> dict[str, Any]:
    per_model = run.rows.group_by("model").agg(
        pl.len().alias("answers"),
        pl.col("posts").list.len().mean().alias("posts_per_answer"),
        pl.col("completion_tokens").sum().alias("completion_tokens"),
        pl.col("latency_s").mean().alias("latency_s_mean"),
    )
    return {
        "folder": paths.root,
        "answers": run.rows.height,
        "generated_now": run.generated,
        "kept_from_an_earlier_run": run.reused,
        "errors": run.rows.filter(pl.col("error").is_not_null()).height,
        "seconds": round(run.seconds, 1),
        "answers_per_s": round(run.generated / run.seconds, 3) if run.seconds and run.generated else 0.0,
        "per_model": Markdown(markdown_table(per_model.sort("model"), rows=10)),
        "sample": sample_markdown(run.rows, heldout),
        "sampling": sampling,
        "server_log": paths.server_log,
        "tool_call_parser": spec.tool_call_parser,
        "chat_template": spec.chat_template or "the tokenizer's",
    }


def cut(text: str, width: int = TEXT_SHOWN) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


THREAD_COLUMNS = {
    "thread": pl.String,  # the post answered
    "real_reply": pl.String,
    **{f"{model}_{part}": kind for model in MODELS for part, kind in (("answer", pl.String), ("valid", pl.Boolean))},
    "example_id": pl.String,
}


def thread_table(rows: pl.DataFrame, heldout: pl.DataFrame, threads: int = THREADS_SHOWN) -> Table:
    """The first ``threads`` answered held-out threads (by id): the post answered, the agent's real reply, each
    model's first answer and whether it is a valid reply by evaluation's rule (posts joined by " / ", text cut)."""
    first = rows.filter(pl.col("sample") == 0)
    answers = {
        (example_id, model): (list(posts or []), invalid)
        for example_id, model, posts, invalid in first.select(
            "example_id", "model", "posts", "invalid_calls"
        ).iter_rows()
    }
    prompts = dict(zip(heldout["example_id"].to_list(), heldout["prompt"].to_list(), strict=True))
    real = evaluation.real_answers(heldout)
    records = []
    for example_id in sorted({e for e, _ in answers})[:threads]:
        record: dict[str, Any] = {
            "thread": cut(post_answered(prompts.get(example_id, ""))),
            "real_reply": cut(" / ".join(real.get(example_id, []))),
        }
        for model in MODELS:
            posts, invalid = answers.get((example_id, model), ([], 0))
            record[f"{model}_answer"] = cut(" / ".join(posts)) or "(no call)"
            record[f"{model}_valid"] = valid_answer(posts, invalid)
        records.append({**record, "example_id": example_id})
    return Table(pl.DataFrame(records, schema=THREAD_COLUMNS))


def tracking_metadata(tracked: TrackedRun | None, summary: str, ui_url: str | None) -> dict[str, Any]:
    """What MLflow got (``summary``), with links to the training's run and its registered model version in the
    MLflow UI (the configured one, the tracking server's own, or make mlflow-ui's over a local store)."""
    if tracked is None:
        return {"mlflow": summary}
    links = {"mlflow": summary, "mlflow_run": Url(tracked.link(ui_url))}
    if tracked.model_version:
        links["mlflow_model_version"] = Url(tracked.version_link(ui_url))
    return links


def report_metadata(
    report: EvalReport,
    paths: EvaluationPaths,
    threads: Table,
    not_measured: str | None,
    review_threads: int,
    tracked: dict[str, Any],
    judged: dict[str, Any] | None,
) -> dict[str, Any]:
    """The headline numbers first (each a number named with its unit, charted across materializations), the
    per-thread table, the plots inline, the full table as markdown, then where everything lies."""
    return {
        "examples": report.examples,
        "samples_per_prompt": report.samples,
        **report.headline_numbers(),
        "threads": threads,
        "report": Markdown(report.markdown()),
        "length_plot": plot_markdown(paths.length_plot, "post lengths"),
        "metric_plot": plot_markdown(paths.metric_plot, "metrics"),
        "tuned_wins": report.wins(),
        "authorship": report.authorship or {"not_measured": not_measured},
        **tracked,
        "report_json": paths.report,
        "review_pack": review.pack_path(paths.review),
        "review_threads": review_threads,
        "review_command": "./void-pipeline review --rater NAME  # the blind review page over this pack",
        "judge": judged or {"off": "set judge_url to compare answers with an LLM judge"},
    }
