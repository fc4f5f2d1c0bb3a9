"""What an evaluation shows in the UI: plain values (defs/metadata.as_metadata shows them)."""

from __future__ import annotations

from typing import Any

import polars as pl

from void_pipeline.lib.evaluate import evaluation
from void_pipeline.lib.evaluate.generations import GenerationRun
from void_pipeline.lib.evaluate.report import EvalReport
from void_pipeline.lib.layout import EvaluationPaths
from void_pipeline.lib.report import Markdown, markdown_table
from void_pipeline.lib.serve.vllm_server import ServerSpec

MODELS = ("base", "tuned")


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


def report_metadata(
    report: EvalReport,
    paths: EvaluationPaths,
    not_measured: str | None,
    review_threads: int,
    tracked: str,
    judged: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "report": Markdown(report.markdown()),
        "examples": report.examples,
        "samples_per_prompt": report.samples,
        "tuned_wins": report.wins(),
        "authorship": report.authorship or {"not_measured": not_measured},
        "length_plot": paths.length_plot,
        "metric_plot": paths.metric_plot,
        "report_json": paths.report,
        "review_pack": paths.review / "review.md",
        "review_threads": review_threads,
        "mlflow": tracked,
        "judge": judged or {"off": "set judge_url to compare answers with an LLM judge"},
    }
