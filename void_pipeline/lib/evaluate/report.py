"""The evaluation report: the base model, the tuned one and the agent's real replies side by side on the held-out
threads, with the gates that decide whether the tuned model may be served.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from void_pipeline.lib.evaluate import evaluation, review
from void_pipeline.lib.evaluate.authorship import AuthorshipClassifier
from void_pipeline.lib.evaluate.judge import Judge, judge_answers
from void_pipeline.lib.evaluate.metrics import (
    Answer,
    call_validity,
    distance,
    distinct_n,
    failure_modes,
    js_divergence,
    post_lengths,
    posts_per_answer,
    share_ci,
)
from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.handoffs import GateVerdict
from void_pipeline.lib.layout import EvaluationPaths
from void_pipeline.lib.plots import png_figure

REAL = "real"


@dataclass(frozen=True)
class Gates:
    """Thresholds for serving: blocking ones fail the asset checks; the rest warn."""

    min_call_validity: float = 0.9  # share of tuned answers with only valid reply calls (blocking)
    max_character_sheet_per_1000: float = 5.0  # tuned answers with character-sheet content (blocking)
    tuned_must_beat_base: tuple[str, ...] = ("authorship_pass_rate", "heldout_loss")  # warnings


# Metrics where lower is better (the rest: higher is better); the report marks the better of base and tuned.
LOWER_IS_BETTER = {
    "no_call",
    "truncated",
    "invalid_call",
    "post_length_wasserstein",
    "post_length_ks",
    "posts_per_answer_wasserstein",
    "unigram_jsd",
    "bigram_jsd",
    "character_sheet",
    "voice_break",
    "empty_answer",
    "repetition_loop",
    "over_length",
    "hashtag_rate_gap",
    "emoji_rate_gap",
    "heldout_loss",
}
# Descriptive numbers with no better direction (their distance to the real replies is what is compared).
DESCRIPTIVE = {"posts_per_answer", "post_length_mean", "distinct_1", "distinct_2"}
# Each metric's unit: its name where a unit must show (numeric metadata keys), and in words (the report's column).
# Shares are 0-1, failure modes count answers per 1,000: the two never share a name.
UNITS: dict[str, tuple[str, str]] = {
    "call_validity": ("call_validity_share", "share of answers"),
    "no_call": ("no_call_share", "share of answers"),
    "invalid_call": ("invalid_call_share", "share of answers"),
    "truncated": ("truncated_share", "share of answers"),
    "posts_per_answer": ("mean_posts_per_answer", "posts"),
    "post_length_mean": ("post_length_mean_graphemes", "graphemes"),
    "post_length_wasserstein": ("post_length_wasserstein_graphemes", "graphemes"),
    "post_length_ks": ("post_length_ks_statistic", "KS statistic, 0-1"),
    "posts_per_answer_wasserstein": ("posts_per_answer_wasserstein_posts", "posts"),
    "unigram_jsd": ("unigram_jsd_bits", "bits, 0-1"),
    "bigram_jsd": ("bigram_jsd_bits", "bits, 0-1"),
    "distinct_1": ("distinct_1_share", "share of n-grams"),
    "distinct_2": ("distinct_2_share", "share of n-grams"),
    "authorship_pass_rate": ("authorship_pass_share", "share of posts"),
    "semantic_similarity": ("semantic_similarity_cosine", "cosine"),
    "heldout_loss": ("heldout_loss_nats_per_token", "nats per token"),
    "character_sheet": ("character_sheet_per_1000", "per 1,000 answers"),
    "voice_break": ("voice_break_per_1000", "per 1,000 answers"),
    "empty_answer": ("empty_answer_per_1000", "per 1,000 answers"),
    "repetition_loop": ("repetition_loop_per_1000", "per 1,000 answers"),
    "over_length": ("over_length_per_1000", "per 1,000 answers"),
    "hashtag_rate_gap": ("hashtag_gap_per_post", "per post"),
    "emoji_rate_gap": ("emoji_gap_per_post", "per post"),
}
# The blocking gates: the metric each measures, its threshold's field in Gates, and which way it must hold.
GATES: dict[str, tuple[str, str, str]] = {
    "tool_call_validity": ("call_validity", "min_call_validity", "min"),
    "character_sheet_rate": ("character_sheet", "max_character_sheet_per_1000", "max"),
}


def unit_name(metric: str) -> str:
    """The metric's name with its unit (``call_validity_share``, ``character_sheet_per_1000``)."""
    return UNITS[metric][0] if metric in UNITS else metric


@dataclass
class ModelScores:
    model: str
    answers: int
    values: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)


def answers_of(generations: pl.DataFrame, model: str) -> tuple[list[list[str]], list[int]]:
    rows = generations.filter(pl.col("model") == model)
    return rows["posts"].to_list(), rows["invalid_calls"].to_list()


def score(
    model: str,
    answers: Sequence[Answer],
    invalid_calls: Sequence[int],
    real: Sequence[Answer],
    classifier: AuthorshipClassifier | None,
) -> ModelScores:
    scores = ModelScores(model, len(answers))
    validity = call_validity(answers, invalid_calls)
    values = scores.values
    values["call_validity"] = validity.rate
    scores.intervals["call_validity"] = share_ci(validity.valid, validity.answers)
    values["no_call"] = validity.no_call / max(validity.answers, 1)
    values["invalid_call"] = validity.invalid_call / max(validity.answers, 1)
    per_answer = posts_per_answer(answers)
    lengths = post_lengths(answers)
    values["posts_per_answer"] = sum(per_answer) / len(per_answer) if per_answer else math.nan
    values["post_length_mean"] = sum(lengths) / len(lengths) if lengths else math.nan
    length_distance = distance(lengths, post_lengths(real))
    values["post_length_wasserstein"] = length_distance.wasserstein
    values["post_length_ks"] = length_distance.ks
    values["posts_per_answer_wasserstein"] = distance(per_answer, posts_per_answer(real)).wasserstein
    texts = [p for posts in answers for p in posts]
    real_texts = [p for posts in real for p in posts]
    values["unigram_jsd"] = js_divergence(texts, real_texts, 1)
    values["bigram_jsd"] = js_divergence(texts, real_texts, 2)
    values["distinct_1"] = distinct_n(texts, 1)
    values["distinct_2"] = distinct_n(texts, 2)
    if classifier is not None:
        probabilities = classifier.agent_probability([t for t in texts if t.strip()])
        passed = sum(p >= 0.5 for p in probabilities)
        values["authorship_pass_rate"] = passed / len(probabilities) if probabilities else math.nan
        scores.intervals["authorship_pass_rate"] = share_ci(passed, len(probabilities))
    failures = failure_modes(answers)
    real_failures = failure_modes(real)
    values.update({k: v for k, v in failures.as_dict().items() if not k.endswith("_per_post")})
    values["hashtag_rate_gap"] = abs(failures.hashtags_per_post - real_failures.hashtags_per_post)
    values["emoji_rate_gap"] = abs(failures.emoji_per_post - real_failures.emoji_per_post)
    return scores


@dataclass
class EvalReport:
    scores: dict[str, ModelScores]  # base, tuned, real
    examples: int
    samples: int
    authorship: dict[str, Any] | None
    gates: Gates | None  # None: no gates judged (the shadow run's report)
    blocking: dict[str, tuple[bool, str]] = field(default_factory=dict)  # name → (passed, why)
    warnings: dict[str, tuple[bool, str]] = field(default_factory=dict)
    compared: tuple[str, str] = ("base", "tuned")  # the reference model and the one judged against it

    def headline(self) -> dict[str, float]:
        tuned = self.scores.get(self.compared[1])
        return {k: v for k, v in (tuned.values if tuned else {}).items() if isinstance(v, float) and not math.isnan(v)}

    def headline_numbers(self) -> dict[str, float]:
        """The headline as numbers named with their unit (``tuned_call_validity_share``), and the tuned model's mean
        post length over the real replies' (``post_length_ratio_tuned_to_real``): one series each across runs."""
        name = self.compared[1]
        numbers = {f"{name}_{unit_name(k)}": shown(v) for k, v in self.headline().items()}
        lengths = {model: scores.values.get("post_length_mean", math.nan) for model, scores in self.scores.items()}
        tuned, real = lengths.get(name, math.nan), lengths.get(REAL, math.nan)
        if not math.isnan(tuned) and not math.isnan(real) and real > 0:
            numbers[f"post_length_ratio_{name}_to_real"] = shown(tuned / real)
        return numbers

    def gate_numbers(self, gate: str) -> dict[str, float]:
        """A blocking gate's threshold and the tuned model's measure, named with their unit (``min_share``,
        ``measured_share``); {} for a gate that was not measured."""
        metric, threshold, direction = GATES[gate]
        tuned = self.scores.get(self.compared[1])
        measured = tuned.values.get(metric, math.nan) if tuned else math.nan
        if self.gates is None or math.isnan(measured):
            return {}
        unit = unit_name(metric).removeprefix(metric + "_")
        return {f"{direction}_{unit}": float(getattr(self.gates, threshold)), f"measured_{unit}": shown(measured)}

    def comparison_numbers(self, metric: str) -> dict[str, float]:
        """Base and tuned (the compared pair) on one metric, named with its unit (a warning's numbers)."""
        values = {m: self.scores[m].values.get(metric, math.nan) for m in self.compared if m in self.scores}
        return {f"{m}_{unit_name(metric)}": shown(v) for m, v in values.items() if not math.isnan(v)}

    def better(self, metric: str) -> str | None:
        """The better of the compared pair on ``metric`` (None: a tie, a descriptive metric, or not measured)."""
        reference, judged = self.compared
        base, tuned = self.scores.get(reference), self.scores.get(judged)
        if base is None or tuned is None:
            return None
        a, b = base.values.get(metric, math.nan), tuned.values.get(metric, math.nan)
        if metric in DESCRIPTIVE or math.isnan(a) or math.isnan(b) or a == b:
            return None
        lower = metric in LOWER_IS_BETTER
        return judged if (b < a) == lower else reference

    def wins(self) -> list[str]:
        """Metrics on which the tuned model (the judged one) is better than the base (the reference)."""
        names = sorted({k for s in self.scores.values() for k in s.values})
        return [m for m in names if self.better(m) == self.compared[1]]

    def markdown(self) -> str:
        columns = [name for name in (*self.compared, REAL) if name in self.scores]
        names = [k for k in self.scores[columns[0]].values]
        lines = [
            "| metric | unit | " + " | ".join(columns) + " | better |",
            "|---|---|" + "---:|" * len(columns) + "---|",
        ]
        for name in names:
            cells = []
            for column in columns:
                value = self.scores[column].values.get(name, math.nan)
                interval = self.scores[column].intervals.get(name)
                text = _number(value)
                if interval and not math.isnan(interval[0]):
                    text += f" [{_number(interval[0])}, {_number(interval[1])}]"
                cells.append(text)
            arrow = "" if name in DESCRIPTIVE else " ↓" if name in LOWER_IS_BETTER else " ↑"
            unit = UNITS[name][1] if name in UNITS else ""
            lines.append(f"| {name}{arrow} | {unit} | " + " | ".join(cells) + f" | {self.better(name) or ''} |")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "samples": self.samples,
            "scores": {k: {"answers": s.answers, **s.values} for k, s in self.scores.items()},
            "intervals": {k: s.intervals for k, s in self.scores.items()},
            "authorship": self.authorship,
            "gates": asdict(self.gates) if self.gates else None,
            "blocking": GateVerdict.as_json(self.blocking),  # what serving reads (handoffs.read_gates)
            "warnings": {k: {"passed": p, "why": w} for k, (p, w) in self.warnings.items()},
            f"{self.compared[1]}_wins": self.wins(),
        }


def shown(value: float) -> float:
    """A number as metadata shows it: 4 decimals (0.8333, 33.3333), not float noise."""
    return round(float(value), 4)


def _number(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"


def build_report(
    generations: pl.DataFrame,
    real: Mapping[str, Answer],
    classifier: AuthorshipClassifier | None,
    gates: Gates | None,
    heldout_loss: Mapping[str, float] | None = None,
    similarity: Mapping[str, Mapping[str, float]] | None = None,
    compared: tuple[str, str] = ("base", "tuned"),
) -> EvalReport:
    """``real``: example id → the agent's real posts for every held-out example answered. ``heldout_loss``: model →
    mean loss on the real answers' tokens; ``similarity``: model → {mean, low, high} cosine to the real replies.
    ``compared``: the reference model and the one judged against it (the gates, when given, judge the latter)."""
    answered = set(generations["example_id"].to_list())
    real_answers = [list(real[e]) for e in sorted(answered) if e in real]
    scores = {}
    for model in sorted(set(generations["model"].to_list())):
        answers, invalid = answers_of(generations, model)
        scores[model] = score(model, answers, invalid, real_answers, classifier)
        finishes = generations.filter(pl.col("model") == model)["finish_reason"]
        # cut off by max_tokens: a call that never closed counts as no call; this says how many to raise the limit for
        scores[model].values["truncated"] = finishes.to_list().count("length") / max(finishes.len(), 1)
    scores[REAL] = score(REAL, real_answers, [0] * len(real_answers), real_answers, classifier)
    for model, loss in (heldout_loss or {}).items():
        if model in scores and isinstance(loss, float):
            scores[model].values["heldout_loss"] = loss
    for model, cosine in (similarity or {}).items():
        if model in scores:
            scores[model].values["semantic_similarity"] = float(cosine["mean"])
            scores[model].intervals["semantic_similarity"] = (float(cosine["low"]), float(cosine["high"]))
    authorship = None
    if classifier is not None:
        authorship = {
            "trained_on_agent_posts": classifier.trained_on[0],
            "trained_on_other_posts": classifier.trained_on[1],
            "cross_validated_accuracy": classifier.cross_validated_accuracy,
            "ceiling_pass_rate_on_real_heldout": scores[REAL].values.get("authorship_pass_rate", math.nan),
        }
    samples = generations["sample"].n_unique()
    report = EvalReport(scores, len(answered), samples, authorship, gates, compared=compared)
    if gates is not None:
        judge_gates(report)
    return report


def call_validity_verdict(report: Mapping[str, Any]) -> str:
    """One line on whether the tuned model answers in the handler's shape (valid reply calls) more often than the
    base, from a report's ``as_dict()``: a difference is claimed only where the two 95% intervals do not overlap."""
    shares = {}
    for model in ("tuned", "base"):
        rate = report.get("scores", {}).get(model, {}).get("call_validity")
        interval = report.get("intervals", {}).get(model, {}).get("call_validity")
        if rate is None or not interval or any(math.isnan(v) for v in interval):
            return f"no verdict on call validity: the {model} model's answers were not scored"
        shares[model] = (float(rate), float(interval[0]), float(interval[1]))
    (tuned, tuned_low, tuned_high), (base, base_low, base_high) = shares["tuned"], shares["base"]
    numbers = f"{tuned:.2f} [{tuned_low:.2f}, {tuned_high:.2f}] vs {base:.2f} [{base_low:.2f}, {base_high:.2f}]"
    if tuned_low > base_high:
        return f"tuned answers in the handler's shape more often than base: {numbers} (95% intervals apart)"
    if base_low > tuned_high:
        return f"tuned answers in the handler's shape LESS often than base: {numbers} (95% intervals apart)"
    return (
        f"no clear difference in answering in the handler's shape, tuned vs base: {numbers}; the 95% intervals "
        "overlap, so this sample shows no learning of the reply format"
    )


def judge_gates(report: EvalReport) -> None:
    gates = report.gates
    tuned = report.scores.get("tuned")
    if gates is None:
        return
    if tuned is None:
        report.blocking["tuned_answers"] = (False, "no answers of the tuned model")
        return
    validity = tuned.values["call_validity"]
    report.blocking["tool_call_validity"] = (
        validity >= gates.min_call_validity,
        f"{validity:.1%} of tuned answers hold only valid reply calls (gate >= {gates.min_call_validity:.0%})",
    )
    sheets = tuned.values["character_sheet"]
    report.blocking["character_sheet_rate"] = (
        sheets <= gates.max_character_sheet_per_1000,
        f"{sheets:.1f} character-sheet answers per 1,000 (gate <= {gates.max_character_sheet_per_1000:g})",
    )
    for metric in gates.tuned_must_beat_base:
        if metric not in tuned.values:
            report.warnings[f"beats_base_on_{metric}"] = (False, f"{metric} was not measured")
            continue
        better = report.better(metric)
        base = report.scores["base"].values.get(metric, math.nan) if "base" in report.scores else math.nan
        report.warnings[f"beats_base_on_{metric}"] = (
            better == "tuned",
            f"{metric}: tuned {_number(tuned.values[metric])} vs base {_number(base)}",
        )


def length_plot(generations: pl.DataFrame, real: Sequence[Answer], path: Path) -> Path:
    """Post-length histograms of base, tuned and real, overlaid (PNG)."""
    series: dict[str, list[list[str]]] = {
        m: answers_of(generations, m)[0] for m in sorted(set(generations["model"].to_list()))
    }
    series[REAL] = [list(posts) for posts in real]
    bins = list(range(0, 320, 20))
    with png_figure(path, ncols=2, figsize=(10, 3.5)) as (_, axes):
        for name, answers in series.items():
            axes[0].hist(post_lengths(answers) or [0], bins=bins, alpha=0.45, label=name, density=True)
            counts = posts_per_answer(answers) or [0]
            axes[1].hist(counts, bins=range(0, max(counts) + 2), alpha=0.45, label=name, density=True)
        axes[0].set_title("post length (graphemes)")
        axes[1].set_title("posts per answer")
        axes[0].legend()
    return path


def metric_plot(report: EvalReport, path: Path) -> Path:
    """Bars of the comparable metrics, base vs tuned vs real (PNG)."""
    names = ["call_validity", "authorship_pass_rate", "semantic_similarity", "unigram_jsd", "bigram_jsd"]
    names += ["post_length_ks", "distinct_2"]
    names = [n for n in names if any(n in s.values for s in report.scores.values())]
    width = 0.8 / max(len(report.scores), 1)
    with png_figure(path, figsize=(10, 3.5)) as (_, axis):
        for i, (model, scores) in enumerate(report.scores.items()):
            values = [0 if math.isnan(v := scores.values.get(n, math.nan)) else v for n in names]
            axis.bar([x + i * width for x in range(len(names))], values, width, label=model)
        axis.set_xticks([x + width for x in range(len(names))], names, rotation=15)
        axis.legend()
    return path


def write_report(
    report: EvalReport,
    paths: EvaluationPaths,
    heldout: pl.DataFrame,
    generations: pl.DataFrame,
    review_threads: int,
    seed: int,
    judge: Judge | None = None,
    judge_threads: int = 50,
) -> tuple[int, dict[str, Any] | None]:
    """The evaluation's files: report.json and report.md, the length and metric plots, the blind review pack and,
    with a judge, its verdicts (added to report.json). Returns the review pack's thread count and the verdicts."""
    data = report.as_dict()
    write_text_atomic(paths.report, json.dumps(data, indent=2, default=str))
    write_text_atomic(paths.report_markdown, report.markdown())
    real = [posts for e, posts in evaluation.real_answers(heldout).items() if e in set(generations["example_id"])]
    length_plot(generations, real, paths.length_plot)
    metric_plot(report, paths.metric_plot)
    reviewed = review.write_review_pack(heldout, generations, paths, review_threads, seed)
    if judge is None:
        return reviewed, None
    threads, answers = evaluation.judge_inputs(heldout, generations, judge_threads)
    judged = judge_answers(judge, threads, answers).as_dict()
    data["judge"] = {"url": judge.base_url, "model": judge.model, **judged}
    write_text_atomic(paths.report, json.dumps(data, indent=2, default=str))
    return reviewed, judged
