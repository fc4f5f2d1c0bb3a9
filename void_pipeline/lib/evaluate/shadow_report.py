"""The shadow run's daily report: the day's real agent replies set beside the served model's answers and the
candidate's (shadow_replies wrote them into the day's folder), scored as evaluation scores held-out threads, with the
trend across days, the worst pairs for review, and whether the candidate falls below the served model.

A skipped day (skipped.json: no served model, ...) and a day with no agent replies get a report that says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from void_pipeline.lib.curate.prompt import post_answered
from void_pipeline.lib.evaluate import evaluation
from void_pipeline.lib.evaluate.authorship import AuthorshipClassifier
from void_pipeline.lib.evaluate.metadata import cut
from void_pipeline.lib.evaluate.metrics import words
from void_pipeline.lib.evaluate.report import (
    REAL,
    UNITS,
    EvalReport,
    build_report,
    length_plot,
    metric_plot,
    shown,
    unit_name,
)
from void_pipeline.lib.evaluate.shadow import CANDIDATE, PRODUCTION
from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.layout import ServePaths, ShadowDayPaths, ShadowPaths
from void_pipeline.lib.plots import png_figure
from void_pipeline.lib.report import Markdown, Table
from void_pipeline.lib.serve.bundle import BundleError, current_bundle, read_bundle
from void_pipeline.lib.train.metadata import plot_markdown

# What the check compares and the trend draws: all higher-is-better.
HEADLINE = ("call_validity", "authorship_pass_rate", "semantic_similarity")
TREND = (*HEADLINE, "character_sheet")
# The numbers shown per model in the metadata (each named with its unit): the headline and the failure modes.
NUMBERS = (*HEADLINE, "character_sheet", "voice_break", "repetition_loop", "empty_answer", "post_length_wasserstein")
COSINE, OVERLAP = "similarity_cosine", "word_overlap_jaccard"  # the worst pairs' measure: with or without Pipes
TREND_DAYS_SHOWN = 30


class ShadowInputMissing(ValueError):
    """The day has neither answers nor a reason it was skipped; the message says what to materialize."""


@dataclass(frozen=True)
class ShadowDay:
    day: str
    replies: pl.DataFrame  # example_id, root_uri, created_at, prompt, calls (the agent's real posts)
    generations: pl.DataFrame  # GENERATION_SCHEMA: models production and, when there is one, candidate
    settings: dict[str, Any]
    skipped: str | None = None  # why the day was not answered

    @property
    def answered(self) -> bool:
        return self.skipped is None and self.replies.height > 0 and self.generations.height > 0


def read_day(paths: ShadowDayPaths) -> ShadowDay:
    """The day's folder as shadow_replies left it: skipped.json wins (the run said why it answered nothing); then
    replies.parquet (no rows: a day without agent replies) and generations.parquet beside it."""
    settings = json.loads(paths.settings.read_text()) if paths.settings.exists() else {}
    if paths.skipped.exists():
        try:
            reason = str(json.loads(paths.skipped.read_text()).get("reason") or "no reason given")
        except (ValueError, AttributeError) as err:
            raise ShadowInputMissing(f"{paths.skipped} is damaged ({err}): materialize shadow_replies again") from err
        return ShadowDay(paths.day, pl.DataFrame(), pl.DataFrame(), settings, reason)
    if not paths.replies.exists():
        raise ShadowInputMissing(
            f"no shadow replies for {paths.day} in {paths.root}: materialize shadow_replies for that day"
        )
    replies = pl.read_parquet(paths.replies)
    if replies.height and not paths.generations.exists():
        raise ShadowInputMissing(
            f"{paths.generations} is missing ({replies.height} replies, no answers): materialize shadow_replies for "
            f"{paths.day} again (it resumes)"
        )
    generations = pl.read_parquet(paths.generations) if paths.generations.exists() else pl.DataFrame()
    return ShadowDay(paths.day, replies, generations, settings)


def served_dataset(settings: Mapping[str, Any], serve: ServePaths) -> Path | None:
    """The training dataset of the bundle that answered as production: the one the day's settings name (``dataset``,
    or the bundle version under ``shadow.production.bundle``), else the current bundle's. None when none is known."""
    if settings.get("dataset"):
        return Path(str(settings["dataset"]))
    version = (settings.get("shadow") or {}).get(PRODUCTION, {}).get("bundle")
    try:
        bundle = read_bundle(serve.bundle(int(version))) if version is not None else current_bundle(serve)
    except (BundleError, ValueError, TypeError):
        return None
    source = bundle.source.get("dataset") if bundle else None
    return Path(str(source)) if source else None


def no_candidate(settings: Mapping[str, Any]) -> str:
    """Why the day had no candidate, as shadow_replies recorded it."""
    why = (settings.get("shadow") or {}).get(CANDIDATE, {}).get("none")
    return f"no candidate ({why})" if why else "no candidate"


def similarity_inputs(day: ShadowDay, path: Path) -> list[tuple[str, str, int]]:
    """Every answer with a post beside its real reply, as external/evaluate_models.py reads them (``model``,
    ``text``, ``real``), written to ``path``; returns each line's (example id, model, sample)."""
    real = evaluation.real_answers(day.replies)
    keys, lines = [], []
    for example_id, model, sample, posts in day.generations.select(
        "example_id", "model", "sample", "posts"
    ).iter_rows():
        if posts and real.get(example_id):
            keys.append((example_id, model, sample))
            text, reply = "\n\n".join(posts), "\n\n".join(real[example_id])
            lines.append(json.dumps({"example_id": example_id, "model": model, "text": text, "real": reply}))
    write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))
    return keys


def word_overlap(text: str, reference: str) -> float:
    """Shared distinct words over all distinct words of the two (Jaccard; 0 when both are empty)."""
    a, b = set(words(text)), set(words(reference))
    return len(a & b) / len(a | b) if a | b else 0.0


@dataclass
class ShadowReport:
    day: str
    status: str  # reported | skipped | empty
    why: str
    replies: int
    evaluation: EvalReport | None = None  # None when skipped or empty
    worst: pl.DataFrame = field(default_factory=pl.DataFrame)
    measure: str = OVERLAP  # how the worst pairs were ranked
    errors: int = 0  # answers the server failed to give (they count as answers with no call)

    @property
    def models(self) -> list[str]:
        scores = self.evaluation.scores if self.evaluation else {}
        return [m for m in (PRODUCTION, CANDIDATE) if m in scores]

    def value(self, model: str, metric: str) -> float:
        scores = self.evaluation.scores.get(model) if self.evaluation else None
        return scores.values.get(metric, math.nan) if scores else math.nan

    def numbers(self) -> dict[str, float]:
        """Each model's headline numbers named with their unit (``candidate_call_validity_share``)."""
        return {
            f"{model}_{unit_name(metric)}": shown(value)
            for model in (*self.models, REAL)
            for metric in NUMBERS
            if not math.isnan(value := self.value(model, metric))
        }

    def markdown(self) -> str:
        lines = [f"# Shadow report {self.day}", "", self.why, ""]
        if self.evaluation is not None:
            lines += [self.evaluation.markdown(), "", f"## The {len(self.worst)} worst pairs ({self.measure})", ""]
            lines.append(worst_markdown(self.worst))
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"day": self.day, "status": self.status, "why": self.why, "replies": self.replies}
        if self.evaluation is not None:
            data |= {"errors": self.errors, **self.evaluation.as_dict(), "worst_measure": self.measure}
            data["worst"] = self.worst.to_dicts()
        return data


def pair_scores(day: ShadowDay, cosines: Mapping[tuple[str, str, int], float] | None) -> dict[tuple[str, str], float]:
    """(example id, model) → how close its first answer came to the real reply: the cosine when the similarity was
    measured, else the word overlap. An answer with no post scores the measure's lowest (-1, 0): the worst."""
    real = evaluation.real_answers(day.replies)
    first = day.generations.filter(pl.col("sample") == 0)
    scores = {}
    for example_id, model, posts in first.select("example_id", "model", "posts").iter_rows():
        if cosines is not None:
            scores[(example_id, model)] = cosines.get((example_id, model, 0), -1.0)
        else:
            scores[(example_id, model)] = word_overlap(" ".join(posts or []), " ".join(real.get(example_id, [])))
    return scores


def worst_pairs(day: ShadowDay, scores: Mapping[tuple[str, str], float], measure: str, count: int) -> pl.DataFrame:
    """The ``count`` replies whose candidate answer (the served model's when there is no candidate) came least
    close to the real reply (ties by example id): the post answered, the real reply, each model's answer and score."""
    models = [m for m in (PRODUCTION, CANDIDATE) if m in set(day.generations["model"].to_list())]
    ranked_by = models[-1]
    first = day.generations.filter(pl.col("sample") == 0)
    answers = {(e, m): list(p or []) for e, m, p in first.select("example_id", "model", "posts").iter_rows()}
    prompts = dict(zip(day.replies["example_id"].to_list(), day.replies["prompt"].to_list(), strict=True))
    real = evaluation.real_answers(day.replies)
    ids = sorted({e for e, m in scores if m == ranked_by}, key=lambda e: (scores[(e, ranked_by)], e))[:count]
    records = []
    for example_id in ids:
        record: dict[str, Any] = {
            "example_id": example_id,
            "thread": cut(post_answered(prompts.get(example_id, ""))),
            "real_reply": cut(" / ".join(real.get(example_id, []))),
        }
        for model in models:
            record[f"{model}_answer"] = cut(" / ".join(answers.get((example_id, model), []))) or "(no call)"
            record[f"{model}_{measure}"] = shown(scores.get((example_id, model), 0.0))
        records.append(record)
    schema: dict[str, Any] = {"example_id": pl.String, "thread": pl.String, "real_reply": pl.String}
    schema |= {k: v for m in models for k, v in ((f"{m}_answer", pl.String), (f"{m}_{measure}", pl.Float64))}
    return pl.DataFrame(records, schema=schema)


def worst_markdown(worst: pl.DataFrame) -> str:
    if worst.height == 0:
        return "_none_"
    lines = []
    for row in worst.iter_rows(named=True):
        lines.append(f"**{row['example_id']}** — {row['thread']}\n")
        lines.append(f"- real: {row['real_reply']}")
        for model in (PRODUCTION, CANDIDATE):
            if f"{model}_answer" in row:
                score = next(v for k, v in row.items() if k.startswith(f"{model}_") and k != f"{model}_answer")
                lines.append(f"- {model} ({score:.3f}): {row[f'{model}_answer']}")
        lines.append("")
    return "\n".join(lines)


def build_shadow_report(
    day: ShadowDay,
    classifier: AuthorshipClassifier | None,
    similarity: Mapping[str, Mapping[str, float]] | None = None,
    cosines: Mapping[tuple[str, str, int], float] | None = None,
    worst: int = 10,
) -> ShadowReport:
    """The day scored as evaluation scores held-out threads (no gates: production is the reference, the candidate
    is judged against it); ``similarity`` and ``cosines`` from the trainer-side step when it ran."""
    if day.skipped is not None:
        return ShadowReport(day.day, "skipped", f"Skipped: {day.skipped}.", 0)
    if not day.answered:
        why = f"No agent replies on {day.day}: nothing to compare." if day.replies.height == 0 else (
            f"{day.replies.height} agent replies on {day.day} but no answers to them.")  # fmt: skip
        return ShadowReport(day.day, "empty", why, day.replies.height)
    real = evaluation.real_answers(day.replies)
    report = build_report(
        day.generations, real, classifier, None, similarity=similarity, compared=(PRODUCTION, CANDIDATE)
    )
    measure = COSINE if cosines is not None else OVERLAP
    pairs = worst_pairs(day, pair_scores(day, cosines), measure, worst)
    models = [m for m in (PRODUCTION, CANDIDATE) if m in report.scores]
    errors = day.generations.filter(pl.col("error").is_not_null()).height
    why = f"{day.replies.height} agent replies on {day.day}, answered by {' and '.join(models)}."
    if CANDIDATE not in report.scores:
        why += f" {no_candidate(day.settings).capitalize()}: only the served model answered."
    return ShadowReport(day.day, "reported", why, day.replies.height, report, pairs, measure, errors)


def write_shadow_report(report: ShadowReport, day: ShadowDay, paths: ShadowDayPaths) -> None:
    """report.json and report.md; on a day with answers, the length and metric plots too."""
    write_text_atomic(paths.report, json.dumps(report.as_dict(), indent=2, default=str))
    write_text_atomic(paths.report_markdown, report.markdown())
    if report.evaluation is not None:
        real = [posts for e, posts in evaluation.real_answers(day.replies).items()]
        length_plot(day.generations, real, paths.length_plot)
        metric_plot(report.evaluation, paths.metric_plot)


def trend_frame(shadow: ShadowPaths, upto: str) -> pl.DataFrame:
    """One row per day up to ``upto`` with a report: its status, replies, and each model's trend metrics (NaN where
    not measured), oldest first."""
    columns = [f"{m}_{unit_name(metric)}" for metric in TREND for m in (PRODUCTION, CANDIDATE)]
    rows = []
    for day in shadow.days():
        paths = shadow.day(day)
        if day > upto or not paths.report.exists():
            continue
        try:
            data = json.loads(paths.report.read_text())
        except ValueError:  # a damaged earlier report leaves a gap, not a failed day
            data = {"status": f"unreadable {paths.report.name}"}
        scores = data.get("scores") or {}
        row: dict[str, Any] = {
            "day": day,
            "status": str(data.get("status", "")),
            "replies": int(data.get("replies") or 0),
        }
        for metric in TREND:
            for model in (PRODUCTION, CANDIDATE):
                value = scores.get(model, {}).get(metric)
                row[f"{model}_{unit_name(metric)}"] = math.nan if value is None else float(value)
        rows.append(row)
    schema = {"day": pl.String, "status": pl.String, "replies": pl.Int64, **{c: pl.Float64 for c in columns}}
    return pl.DataFrame(rows, schema=schema)


def trend_plot(trend: pl.DataFrame, path: Path) -> Path:
    """The trend metrics day by day, a panel each, a line per model (PNG)."""
    days = trend["day"].to_list()
    with png_figure(path, ncols=len(TREND), figsize=(4 * len(TREND), 3.2)) as (_, axes):
        for axis, metric in zip(axes, TREND, strict=True):
            drawn = False
            for model in (PRODUCTION, CANDIDATE):
                values = trend[f"{model}_{unit_name(metric)}"].to_list()
                if any(not math.isnan(v) for v in values):
                    axis.plot(days, values, marker="o", label=model)
                    drawn = True
            if not drawn:
                axis.text(0.5, 0.5, "not measured", ha="center", va="center", transform=axis.transAxes)
                axis.set_xticks([])
            axis.set_title(f"{metric} ({UNITS[metric][1]})", fontsize=9)
            axis.tick_params(axis="x", labelrotation=45, labelsize=7)
        if axes[0].get_legend_handles_labels()[0]:  # no line before the first scored day
            axes[0].legend(fontsize=7)
    return path


def candidate_verdict(report: ShadowReport) -> tuple[bool, str, dict[str, float]]:
    """Whether the candidate is at least as good as the served model on every headline measure measured (validity,
    authorship, similarity), why, and both models' numbers. Passes, saying so, when there is nothing to compare."""
    if report.evaluation is None:
        return True, f"nothing to compare: {report.why}", {}
    if CANDIDATE not in report.models:
        return True, "no candidate: only the served model answered", {}
    below, measured, numbers = [], [], dict[str, float]()
    for metric in HEADLINE:
        production, candidate = report.value(PRODUCTION, metric), report.value(CANDIDATE, metric)
        if math.isnan(production) or math.isnan(candidate):
            continue
        measured.append(metric)
        numbers |= {
            f"production_{unit_name(metric)}": shown(production),
            f"candidate_{unit_name(metric)}": shown(candidate),
        }
        if candidate < production:
            below.append(f"{metric}: candidate {candidate:.3f} < production {production:.3f}")
    if below:
        return False, "candidate below production on " + "; ".join(below), numbers
    return True, "candidate at or above production on " + ", ".join(measured), numbers


def days_table(trend: pl.DataFrame) -> Table:
    """The last days of the trend, newest first: status, replies and the headline per model."""
    columns = ["day", "status", "replies"] + [f"{m}_{unit_name(k)}" for k in HEADLINE for m in (PRODUCTION, CANDIDATE)]
    return Table(trend.select(columns).reverse().head(TREND_DAYS_SHOWN).fill_nan(None))


def shadow_metadata(
    report: ShadowReport, paths: ShadowDayPaths, trend: pl.DataFrame, not_measured: Mapping[str, str]
) -> dict[str, Any]:
    """The day's status and headline numbers first (charted across partitions), the worst pairs, the trend inline,
    then the full table, what was not measured and why, and where the files lie."""
    metadata: dict[str, Any] = {"status": report.status, "why": report.why, "replies": report.replies}
    metadata |= report.numbers()
    if report.evaluation is not None:
        metadata |= {
            "answer_errors": report.errors,
            "worst_pairs": Table(report.worst),
            "worst_pairs_measure": report.measure,
        }
    metadata |= {"trend_plot": plot_markdown(paths.trend_plot, "trend"), "days": days_table(trend)}
    if report.evaluation is not None:
        metadata |= {
            "report": Markdown(report.evaluation.markdown()),
            "metric_plot": plot_markdown(paths.metric_plot, "metrics"),
            "authorship": report.evaluation.authorship or {"not_measured": not_measured.get("authorship", "")},
        }
    if not_measured:
        metadata["not_measured"] = dict(not_measured)
    return metadata | {"report_json": paths.report, "report_markdown": paths.report_markdown}
