"""The blind review: a pack of held-out threads, each with the agent's real reply and two anonymised answers (the
base model's and the tuned one's, as "1" and "2" in a seeded random order per thread), the key kept apart, one
ratings file per rater saved as each score is given, and the key applied at the end: per model the mean score per
dimension with a 95% t-interval, and how often the rater would rather post the tuned answer (Wilson interval).

review/pack.json   what the page shows: the evaluation's identity, per item the thread, the real reply, answers 1, 2
review/key.json    item → which model each label is (never sent to the page)
review/review.md, review/review.csv   the same pack to read or rate by hand
review/ratings/<rater>.json   one rater's scores and notes (written whole, atomically, after every change)
review/results.json   the key applied to every rater's file (written by `review --results` and the page's Finish)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from scipy import stats

from void_pipeline.lib.evaluate.metrics import share_ci
from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.layout import EvaluationPaths
from void_pipeline.lib.report import Markdown

MODELS = ("base", "tuned")
LABELS = ("1", "2")
DIMENSIONS = ("voice", "substance", "would_post")
DIMENSION_NAMES = {"voice": "voice", "substance": "substance", "would_post": "would post it"}
SCORES = range(1, 6)
RATER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NO_ANSWER = "(no answer)"


class ReviewError(ValueError):
    """A pack, key or ratings file that cannot be used as it is; the message names the file and what to do."""


def pack_path(folder: Path) -> Path:
    return folder / "pack.json"


def key_path(folder: Path) -> Path:
    return folder / "key.json"


def results_path(folder: Path) -> Path:
    return folder / "results.json"


def ratings_folder(folder: Path) -> Path:
    return folder / "ratings"


@dataclass(frozen=True)
class ReviewItem:
    item: int  # 1-based, the order the page shows
    example_id: str
    thread: str  # the prompt as the model saw it
    real: str  # the agent's own reply, shown as such
    answers: dict[str, str]  # label ("1", "2") → answer text


@dataclass(frozen=True)
class ReviewPack:
    evaluation: str  # the evaluation folder's name (its settings' fingerprint)
    digest: str  # sha256 of the items: a pack written again with other answers or another order differs
    items: list[ReviewItem]

    @property
    def identity(self) -> str:
        return f"evaluation {self.evaluation} (pack {self.digest[:12]})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "evaluation": self.evaluation,
            "digest": self.digest,
            "labels": list(LABELS),
            "dimensions": list(DIMENSIONS),
            "items": [item_dict(i) for i in self.items],
        }

    @staticmethod
    def read(path: Path, evaluation: str | None = None) -> ReviewPack:
        """The pack at ``path``; with ``evaluation``, one written for another evaluation is refused naming both."""
        if not path.exists():
            raise ReviewError(f"{path} is missing: eval_report writes the review pack (materialize it, or give --pack)")
        data = read_json(path, "review pack")
        try:
            items = [ReviewItem(**{**i, "answers": dict(i["answers"])}) for i in data["items"]]
            pack = ReviewPack(str(data["evaluation"]), str(data["digest"]), items)
        except (KeyError, TypeError) as err:
            raise ReviewError(f"{path} is not a review pack ({err}): materialize eval_report again") from err
        if items_digest(items) != pack.digest:
            raise ReviewError(f"{path} was changed after it was written (its digest does not match its items)")
        if evaluation is not None and pack.evaluation != evaluation:
            raise ReviewError(f"{path} is the pack of {pack.identity}, not of evaluation {evaluation}: refused")
        return pack


def item_dict(item: ReviewItem) -> dict[str, Any]:
    return {
        "item": item.item,
        "example_id": item.example_id,
        "thread": item.thread,
        "real": item.real,
        "answers": item.answers,
    }


def items_digest(items: Sequence[ReviewItem]) -> str:
    canonical = json.dumps([item_dict(i) for i in items], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ReviewError(f"{path} is missing: no {what} there") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise ReviewError(f"{path} is corrupt (not JSON: {err}); it is left as it is: move it aside or fix it") from err
    if not isinstance(loaded, dict):
        raise ReviewError(f"{path} is corrupt (not a JSON object); it is left as it is: move it aside or fix it")
    return loaded


def joined(posts: Sequence[str] | None) -> str:
    return "\n\n".join(posts or []) or NO_ANSWER


def build_pack(
    heldout: pl.DataFrame, generations: pl.DataFrame, evaluation: str, threads: int = 50, seed: int = 0
) -> tuple[ReviewPack, dict[str, dict[str, str]]]:
    """``threads`` random held-out threads both models answered (first sample), each with the real reply and the
    two answers under labels in a seeded random order; and the key: item → label → model."""
    first = generations.filter(pl.col("sample") == 0)
    answers = {(e, m): posts for e, m, posts in first.select("example_id", "model", "posts").iter_rows()}
    ids = sorted({e for e, _ in answers if all((e, m) in answers for m in MODELS)})
    rng = random.Random(seed)
    chosen = sorted(rng.sample(ids, min(threads, len(ids))))
    prompts = dict(zip(heldout["example_id"].to_list(), heldout["prompt"].to_list(), strict=True))
    real = dict(zip(heldout["example_id"].to_list(), heldout["calls"].to_list(), strict=True))
    items, key = [], {}
    for number, example_id in enumerate(chosen, 1):
        order = list(MODELS)
        rng.shuffle(order)
        labelled = {label: joined(answers[(example_id, model)]) for label, model in zip(LABELS, order, strict=True)}
        items.append(
            ReviewItem(number, example_id, prompts.get(example_id, ""), joined(real.get(example_id)), labelled)
        )
        key[str(number)] = dict(zip(LABELS, order, strict=True))
    return ReviewPack(evaluation, items_digest(items), items), key


def write_pack(folder: Path, pack: ReviewPack, key: dict[str, dict[str, str]]) -> None:
    """pack.json, key.json (with the pack's identity), and the pack as markdown and csv; each written atomically.
    The ratings already given are kept: a rating names the pack it was given on, so a new pack refuses them."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(pack_path(folder), json.dumps(pack.as_dict(), indent=1, ensure_ascii=False))
    identity = {"evaluation": pack.evaluation, "digest": pack.digest}
    write_text_atomic(key_path(folder), json.dumps({**identity, "items": key}, indent=1))
    markdown = ["# Blind review", "", f"{pack.identity}: score answers 1 and 2 against the real reply.", ""]
    table = io.StringIO()
    rows = csv.writer(table)
    rows.writerow(["item", "example_id", "thread", "real", *LABELS])
    for item in pack.items:
        markdown += [f"## {item.item}. {item.example_id}", "", "```", item.thread, "```", ""]
        for label, text in [("real", item.real), *item.answers.items()]:
            markdown += [f"**{label}.**", "", *(f"> {line}" for line in text.splitlines()), ""]
        rows.writerow([item.item, item.example_id, item.thread, item.real, *item.answers.values()])
    write_text_atomic(folder / "review.md", "\n".join(markdown))
    write_text_atomic(folder / "review.csv", table.getvalue())


def write_review_pack(
    heldout: pl.DataFrame, generations: pl.DataFrame, paths: EvaluationPaths, threads: int = 50, seed: int = 0
) -> int:
    """The evaluation's review pack (eval_report writes it); returns its thread count."""
    pack, key = build_pack(heldout, generations, paths.root.name, threads, seed)
    write_pack(paths.review, pack, key)
    return len(pack.items)


def read_key(folder: Path, pack: ReviewPack) -> dict[str, dict[str, str]]:
    path = key_path(folder)
    data = read_json(path, "review key")
    if (data.get("evaluation"), data.get("digest")) != (pack.evaluation, pack.digest):
        other = f"evaluation {data.get('evaluation')} (pack {str(data.get('digest'))[:12]})"
        raise ReviewError(f"{path} is the key of {other}, not of the pack's {pack.identity}: refused")
    items = data.get("items")
    if not isinstance(items, dict):
        raise ReviewError(f"{path} is corrupt (no items); it is left as it is")
    return {str(k): dict(v) for k, v in items.items()}


# --- ratings ---------------------------------------------------------------------------------------------------


def rater_error(name: str) -> str | None:
    if RATER_NAME.fullmatch(name):
        return None
    return (
        f"rater name {name!r} is not a safe file name: 1-64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit (e.g. alice)"
    )


@dataclass
class Ratings:
    """One rater's file: the pack it belongs to, and per item per label a score per dimension, plus notes."""

    path: Path
    rater: str
    evaluation: str
    digest: str
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # item → {"1": {dim: score}, "2": ..., "notes"}

    @property
    def identity(self) -> str:
        return f"evaluation {self.evaluation} (pack {self.digest[:12]})"

    def complete(self, item: int) -> bool:
        given = self.items.get(str(item), {})
        return all(isinstance(given.get(label, {}).get(d), int) for label in LABELS for d in DIMENSIONS)

    def first_unrated(self, pack: ReviewPack) -> int | None:
        return next((i.item for i in pack.items if not self.complete(i.item)), None)

    def as_dict(self) -> dict[str, Any]:
        return {"rater": self.rater, "evaluation": self.evaluation, "digest": self.digest, "items": self.items}

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.as_dict(), indent=1, ensure_ascii=False))


def ratings_of(folder: Path, pack: ReviewPack, rater: str) -> Ratings:
    """``rater``'s ratings on ``pack`` (empty when there are none yet); one from another pack, or a corrupt file,
    is refused naming the file (it is never written over)."""
    if error := rater_error(rater):
        raise ReviewError(error)
    path = ratings_folder(folder) / f"{rater}.json"
    if not path.exists():
        return Ratings(path, rater, pack.evaluation, pack.digest)
    return read_ratings(path, pack)


def read_ratings(path: Path, pack: ReviewPack) -> Ratings:
    data = read_json(path, "ratings")
    items = data.get("items")
    if not isinstance(items, dict) or not isinstance(data.get("rater"), str):
        raise ReviewError(f"{path} is corrupt (no rater or items); it is left as it is: move it aside or fix it")
    ratings = Ratings(path, data["rater"], str(data.get("evaluation")), str(data.get("digest")), items)
    if (ratings.evaluation, ratings.digest) != (pack.evaluation, pack.digest):
        raise ReviewError(
            f"{path} holds ratings of {ratings.identity}, not of this pack's {pack.identity}: refused "
            "(a pack written again is a new review; move the old ratings aside)"
        )
    return ratings


def all_ratings(folder: Path, pack: ReviewPack) -> list[Ratings]:
    paths = sorted(ratings_folder(folder).glob("*.json")) if ratings_folder(folder).exists() else []
    return [read_ratings(p, pack) for p in paths]


class RatingBook:
    """One rater's ratings as the page changes them: every change written whole and atomically before it is
    acknowledged (a lock keeps two requests of the same page from writing at once)."""

    def __init__(self, folder: Path, pack: ReviewPack, rater: str) -> None:
        self.folder, self.pack = folder, pack
        self.ratings = ratings_of(folder, pack, rater)
        self.lock = threading.Lock()

    def rate(self, item: int, label: str, dimension: str, score: int) -> None:
        self.check_item(item)
        if label not in LABELS or dimension not in DIMENSIONS or score not in SCORES:
            raise ReviewError(f"no such score: answer {label!r}, {dimension!r}, {score!r} (answers 1-2, scores 1-5)")
        with self.lock:
            given = self.ratings.items.setdefault(str(item), {})
            given.setdefault(label, {})[dimension] = score
            given["saved_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            self.ratings.save()

    def note(self, item: int, notes: str) -> None:
        self.check_item(item)
        with self.lock:
            given = self.ratings.items.setdefault(str(item), {})
            given["notes"] = notes[:4000]
            given["saved_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            self.ratings.save()

    def check_item(self, item: int) -> None:
        if not 1 <= item <= len(self.pack.items):
            raise ReviewError(f"no item {item} in the pack (1-{len(self.pack.items)})")


# --- results ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeanScore:
    n: int
    mean: float
    low: float  # 95% t-interval (NaN with fewer than 2 scores)
    high: float


@dataclass(frozen=True)
class Preference:
    """On "would post it": items where tuned scored above base (wins), equal (ties), below (losses); the rate is
    wins over all compared items (ties count as not preferred), with Wilson's 95% interval."""

    wins: int
    ties: int
    losses: int
    rate: float
    low: float
    high: float


def mean_score(scores: Sequence[int]) -> MeanScore:
    n = len(scores)
    if n == 0:
        return MeanScore(0, math.nan, math.nan, math.nan)
    mean = sum(scores) / n
    if n < 2:
        return MeanScore(n, mean, math.nan, math.nan)
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return MeanScore(n, mean, mean - half, mean + half)


def preference(pairs: Sequence[tuple[int, int]]) -> Preference:
    """``pairs``: (base, tuned) scores on "would post it" per item."""
    wins = sum(t > b for b, t in pairs)
    ties = sum(t == b for b, t in pairs)
    low, high = share_ci(wins, len(pairs))
    rate = wins / len(pairs) if pairs else math.nan
    return Preference(wins, ties, len(pairs) - wins - ties, rate, low, high)


@dataclass(frozen=True)
class RaterResults:
    rater: str  # "pooled": every rater's items together (raters' scores are not independent: read it as a sum)
    items: int  # complete items counted
    scores: dict[str, dict[str, MeanScore]]  # model → dimension → mean
    preference: Preference


@dataclass(frozen=True)
class ReviewResults:
    evaluation: str
    digest: str
    threads: int
    per_rater: list[RaterResults]
    pooled: RaterResults
    unkeyed: list[int]  # rated items the key does not name: reported, never counted
    incomplete: dict[str, list[int]]  # rater → items with a score missing (not counted)

    def as_dict(self) -> dict[str, Any]:
        def one(r: RaterResults) -> dict[str, Any]:
            scores = {m: {d: finite(vars(s)) for d, s in by.items()} for m, by in r.scores.items()}
            return {"rater": r.rater, "items": r.items, "scores": scores, "preference": finite(vars(r.preference))}

        return {
            "evaluation": self.evaluation,
            "digest": self.digest,
            "threads": self.threads,
            "interval": "95%: t-interval for mean scores, Wilson for the preference rate",
            "raters": [one(r) for r in self.per_rater],
            "pooled": one(self.pooled),
            "unkeyed_items": self.unkeyed,
            "incomplete_items": self.incomplete,
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per rater (and pooled), model and dimension, then each one's preference row: the results table."""
        table = []
        for r in [*self.per_rater, self.pooled]:
            for model, by in r.scores.items():
                for dimension, s in by.items():
                    table.append(
                        {"rater": r.rater, "measure": f"{model} {DIMENSION_NAMES[dimension]}", "n": s.n,
                         "value": s.mean, "ci_low": s.low, "ci_high": s.high, "detail": "mean score 1-5"}
                    )  # fmt: skip
            p = r.preference
            table.append(
                {"rater": r.rater, "measure": "tuned preferred (would post it)", "n": p.wins + p.ties + p.losses,
                 "value": p.rate, "ci_low": p.low, "ci_high": p.high,
                 "detail": f"share; {p.wins} tuned > base, {p.ties} ties, {p.losses} base > tuned"}
            )  # fmt: skip
        return table

    def markdown(self) -> str:
        lines = [f"{self.pooled.rater}: {self.pooled.items} rated threads of {self.threads}", ""]
        lines += ["| rater | measure | n | value | 95% CI | detail |", "|---|---|---|---|---|---|"]
        for row in self.rows():
            ci = "-" if math.isnan(row["ci_low"]) else f"{row['ci_low']:.2f} – {row['ci_high']:.2f}"
            lines.append(
                f"| {row['rater']} | {row['measure']} | {row['n']} | {row['value']:.2f} | {ci} | {row['detail']} |"
            )
        if self.unkeyed:
            lines.append(f"\nnot in the key (not counted): items {', '.join(map(str, self.unkeyed))}")
        for rater, items in self.incomplete.items():
            lines.append(f"\n{rater}: items {', '.join(map(str, items))} are only partly scored (not counted)")
        return "\n".join(lines)


def finite(values: dict[str, Any]) -> dict[str, Any]:
    """NaN (no interval yet) as null: JSON has no NaN, and the page parses these."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}


def apply_key(pack: ReviewPack, key: dict[str, dict[str, str]], raters: Sequence[Ratings]) -> ReviewResults:
    """Each complete item's scores under the model the key names for each label; per rater and pooled."""
    unkeyed: set[int] = set()
    incomplete: dict[str, list[int]] = {}
    per_rater: list[RaterResults] = []
    pooled_scores: dict[str, dict[str, list[int]]] = {m: {d: [] for d in DIMENSIONS} for m in MODELS}
    pooled_pairs: list[tuple[int, int]] = []
    pooled_items = 0
    for ratings in raters:
        scores: dict[str, dict[str, list[int]]] = {m: {d: [] for d in DIMENSIONS} for m in MODELS}
        pairs: list[tuple[int, int]] = []
        counted = 0
        for item in pack.items:
            if str(item.item) not in ratings.items:
                continue
            if not ratings.complete(item.item):
                incomplete.setdefault(ratings.rater, []).append(item.item)
                continue
            labels = key.get(str(item.item), {})
            if sorted(labels.values()) != sorted(MODELS) or set(labels) != set(LABELS):
                unkeyed.add(item.item)
                continue
            given = ratings.items[str(item.item)]
            by_model = {model: given[label] for label, model in labels.items()}
            for model in MODELS:
                for d in DIMENSIONS:
                    scores[model][d].append(by_model[model][d])
                    pooled_scores[model][d].append(by_model[model][d])
            pairs.append((by_model["base"]["would_post"], by_model["tuned"]["would_post"]))
            counted += 1
        pooled_pairs += pairs
        pooled_items += counted
        per_rater.append(RaterResults(ratings.rater, counted, summarised(scores), preference(pairs)))
    pooled = RaterResults("pooled", pooled_items, summarised(pooled_scores), preference(pooled_pairs))
    return ReviewResults(pack.evaluation, pack.digest, len(pack.items), per_rater, pooled, sorted(unkeyed), incomplete)


def summarised(scores: dict[str, dict[str, list[int]]]) -> dict[str, dict[str, MeanScore]]:
    return {m: {d: mean_score(values) for d, values in by.items()} for m, by in scores.items()}


def review_results(folder: Path, pack_file: Path | None = None, evaluation: str | None = None) -> ReviewResults:
    """The key of the pack in ``folder`` applied to every rater's file there, written to results.json; a
    ``ReviewError`` when there is no rating yet (or a file is corrupt, or of another pack or ``evaluation``)."""
    pack = ReviewPack.read(pack_file or pack_path(folder), evaluation)
    raters = all_ratings(folder, pack)
    if not raters:
        raise ReviewError(
            f"no ratings yet in {ratings_folder(folder)}: rate the pack first (./void-pipeline review --rater NAME)"
        )
    results = apply_key(pack, read_key(folder, pack), raters)
    write_text_atomic(results_path(folder), json.dumps(results.as_dict(), indent=1, default=str))
    return results


def results_metadata(results: ReviewResults, folder: Path) -> dict[str, Any]:
    """review_results' plain metadata: the pooled numbers as numbers (charted across materializations), units in
    the names; the table itself is added by the asset."""
    pooled = results.pooled
    numbers: dict[str, Any] = {
        "evaluation": results.evaluation,
        "raters": len(results.per_rater),
        "threads_in_pack": results.threads,
        "rated_threads_pooled": pooled.items,
    }
    for model, by in pooled.scores.items():
        for dimension, score in by.items():
            if not math.isnan(score.mean):  # a number or nothing: NaN would break the charts
                numbers[f"{model}_{dimension}_mean_score_1to5"] = score.mean
    if pooled.items:
        numbers["tuned_preferred_share"] = pooled.preference.rate
        numbers["tuned_preferred_share_ci95"] = [pooled.preference.low, pooled.preference.high]
    numbers["would_post_wins_ties_losses"] = [pooled.preference.wins, pooled.preference.ties, pooled.preference.losses]
    numbers["unkeyed_items"] = results.unkeyed or "none: every rated thread is in the key"
    numbers["incomplete_items"] = results.incomplete or "none"
    numbers["results_json"] = results_path(folder)
    numbers["report"] = Markdown(results.markdown())
    return numbers
