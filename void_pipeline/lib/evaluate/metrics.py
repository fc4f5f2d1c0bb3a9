"""Voice metrics: how close a model's answers are to the agent's real replies, and how often they fail.

Every function takes answers as lists of posts (one answer = the texts of its reply calls, in order) and returns
plain numbers, so the report can set the base model, the tuned one and the real replies side by side. Confidence
intervals come from a seeded bootstrap over answers.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from void_pipeline.lib.curate.filters import LoopDetector
from void_pipeline.lib.curate.reply_tool import MAX_POST_CHARS, grapheme_count
from void_pipeline.lib.serve.client import post_problems

Answer = Sequence[str]  # the posts of one answer

WORD = re.compile(r"[\w']+|[^\w\s]", re.UNICODE)
HASHTAG = re.compile(r"(?<!\w)#\w+")
# Emoji: the pictographic planes and the older symbol blocks emoji use.
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\U0001f1e6-\U0001f1ff]")
# Assistant boilerplate and refusals: the voice breaks an agent's history does not have.
VOICE_BREAKS = re.compile(
    r"(?i)\bas an ai(?: language model)?\b|\bi(?:'m| am) (?:just )?an ai\b|\bi can(?:no|')t (?:help|assist) with\b"
    r"|\bi(?:'m| am) (?:sorry|unable)\b.{0,40}\b(?:can(?:no|')t|unable)\b|\blanguage model\b"
    r"|\bhow can i (?:help|assist) you\b|\bas a helpful assistant\b|\bi hope this helps\b"
)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


# --- tool calls ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallValidity:
    answers: int
    valid: int  # at least one call, every call the reply tool with 1-300 graphemes
    no_call: int
    invalid_call: int  # a call that did not parse or named another tool
    bad_post: int  # a reply call whose text is empty or too long

    @property
    def rate(self) -> float:
        return self.valid / self.answers if self.answers else 0.0


def valid_answer(posts: Answer, invalid_calls: int) -> bool:
    """Evaluation's rule for one answer (the serving smoke test uses it too): at least one call, every call the reply
    tool with good arguments, every post postable."""
    return bool(posts) and not invalid_calls and not any(post_problems(p) for p in posts)


def call_validity(answers: Sequence[Answer], invalid_calls: Sequence[int]) -> CallValidity:
    """``invalid_calls[i]``: calls of answer i that did not parse or named another tool (the generation records
    them; an answer's posts are its valid reply calls only)."""
    no_call = sum(1 for posts, bad in zip(answers, invalid_calls, strict=True) if not posts and not bad)
    invalid = sum(1 for bad in invalid_calls if bad)
    bad_post = sum(1 for posts in answers if any(post_problems(p) for p in posts))
    valid = sum(1 for posts, bad in zip(answers, invalid_calls, strict=True) if valid_answer(posts, bad))
    return CallValidity(len(answers), valid, no_call, invalid, bad_post)


# --- distributions -------------------------------------------------------------------------------------------


def post_lengths(answers: Sequence[Answer]) -> list[int]:
    return [grapheme_count(p) for posts in answers for p in posts]


def posts_per_answer(answers: Sequence[Answer]) -> list[int]:
    return [len(posts) for posts in answers]


@dataclass(frozen=True)
class Distance:
    wasserstein: float
    ks: float  # the Kolmogorov-Smirnov statistic (0: same distribution, 1: disjoint)


def distance(values: Sequence[float], reference: Sequence[float]) -> Distance:
    """How far one sample's distribution is from the reference's (NaN when either is empty)."""
    if not values or not reference:
        return Distance(math.nan, math.nan)
    return Distance(
        float(stats.wasserstein_distance(values, reference)), float(stats.ks_2samp(values, reference).statistic)
    )


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def ngram_counts(texts: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        counts.update(ngrams(words(text), n))
    return counts


def js_divergence(texts: Sequence[str], reference: Sequence[str], n: int = 1) -> float:
    """Jensen-Shannon divergence (base 2: 0 same, 1 disjoint) between the n-gram distributions of two corpora."""
    a, b = ngram_counts(texts, n), ngram_counts(reference, n)
    total_a, total_b = sum(a.values()), sum(b.values())
    if not total_a or not total_b:
        return math.nan
    divergence = 0.0
    for gram in a.keys() | b.keys():
        p, q = a[gram] / total_a, b[gram] / total_b
        m = (p + q) / 2
        if p:
            divergence += 0.5 * p * math.log2(p / m)
        if q:
            divergence += 0.5 * q * math.log2(q / m)
    return max(0.0, min(1.0, divergence))


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams (higher: more varied wording)."""
    grams = [g for text in texts for g in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


# --- failure modes -------------------------------------------------------------------------------------------


def repetition_loop(posts: Answer, n: int = 3, times: int = 3) -> bool:
    """An answer stuck in a loop: the same post twice, or one word n-gram ``times`` times or more."""
    cleaned = [" ".join(words(p)) for p in posts if p.strip()]
    if len(cleaned) != len(set(cleaned)):
        return True
    counts = Counter(g for p in posts for g in ngrams(words(p), n))
    return bool(counts) and max(counts.values()) >= times


def rate_per_post(answers: Sequence[Answer], pattern: re.Pattern[str]) -> float:
    posts = [p for posts in answers for p in posts]
    return sum(len(pattern.findall(p)) for p in posts) / len(posts) if posts else math.nan


@dataclass(frozen=True)
class FailureModes:
    """Per 1,000 answers, except the two rates (per post) and their distance to the real replies' rates."""

    character_sheet: float
    voice_break: float
    empty_answer: float
    repetition_loop: float
    over_length: float
    hashtags_per_post: float
    emoji_per_post: float

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


def failure_modes(answers: Sequence[Answer], detector: LoopDetector | None = None) -> FailureModes:
    detector = detector or LoopDetector()
    n = len(answers) or 1

    def per_1000(test: Callable[[Answer], bool]) -> float:
        return 1000 * sum(1 for posts in answers if test(posts)) / n

    return FailureModes(
        character_sheet=per_1000(lambda posts: detector.why("\n".join(posts)) is not None),
        voice_break=per_1000(lambda posts: any(VOICE_BREAKS.search(p) for p in posts)),
        empty_answer=per_1000(lambda posts: not any(p.strip() for p in posts)),
        repetition_loop=per_1000(repetition_loop),
        over_length=per_1000(lambda posts: any(grapheme_count(p) > MAX_POST_CHARS for p in posts)),
        hashtags_per_post=rate_per_post(answers, HASHTAG),
        emoji_per_post=rate_per_post(answers, EMOJI),
    )


# --- confidence intervals ------------------------------------------------------------------------------------


def bootstrap_ci(
    items: Sequence[object], statistic: Callable[[Sequence[object]], float], rounds: int = 500, seed: int = 0
) -> tuple[float, float]:
    """The 95% percentile interval of ``statistic`` over ``rounds`` resamples of ``items`` (NaN when empty)."""
    if not items:
        return math.nan, math.nan
    rng = random.Random(seed)
    values = []
    for _ in range(rounds):
        sample = [items[rng.randrange(len(items))] for _ in items]
        value = statistic(sample)
        if not math.isnan(value):
            values.append(value)
    if not values:
        return math.nan, math.nan
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def share_ci(successes: int, total: int) -> tuple[float, float]:
    """Wilson's 95% interval for a share (tool-call validity, authorship pass rate)."""
    if total == 0:
        return math.nan, math.nan
    z, p = 1.96, successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)
