"""An optional LLM judge: pairwise preferences between two answers to the same thread, asked in both orders.

Any OpenAI-compatible endpoint the operator names; its API key comes from an environment variable (never stored,
logged or put in metadata). For each thread and pair (tuned vs base, tuned vs the real reply) the judge sees the
thread and the two answers as A and B, then again with A and B swapped; a verdict counts only when both orders
agree, so a judge that always picks the first answer scores a tie, not a win.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from void_pipeline.lib.evaluate.metrics import share_ci
from void_pipeline.lib.ingest.xrpc import auth_header
from void_pipeline.lib.settings import JUDGE_API_KEY_ENV, settings

VERDICT = re.compile(r"\b([AB])\b")
INSTRUCTION = (
    "You compare two replies to the same Bluesky thread. Which reply sounds more like the account that wrote "
    "the earlier replies in its voice: analytical, precise, on topic? Answer with a single letter: A or B."
)


@dataclass(frozen=True)
class Judge:
    base_url: str  # ends in /v1
    model: str
    api_key_env: str = JUDGE_API_KEY_ENV  # the run config may name another variable
    max_tokens: int = 8

    def headers(self) -> dict[str, str]:
        if self.api_key_env == JUDGE_API_KEY_ENV:
            return auth_header(settings().judge_api_key)
        return auth_header(os.environ.get(self.api_key_env))


def ask(client: httpx.Client, judge: Judge, thread: str, first: str, second: str) -> str | None:
    """'A', 'B', or None when the judge's answer names neither (or the request failed)."""
    content = f"{INSTRUCTION}\n\nTHREAD:\n{thread}\n\nREPLY A:\n{first}\n\nREPLY B:\n{second}\n\nAnswer (A or B):"
    try:
        response = client.post(
            f"{judge.base_url}/chat/completions",
            headers=judge.headers(),
            json={
                "model": judge.model,
                "messages": [{"role": "user", "content": content}],
                "temperature": 0.0,
                "max_tokens": judge.max_tokens,
            },
        )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    text = str((response.json()["choices"][0].get("message") or {}).get("content") or "")
    found = VERDICT.search(text.strip().upper())
    return found.group(1) if found else None


@dataclass
class PairResult:
    wins: int = 0  # both orders preferred the first model's answer
    losses: int = 0  # both orders preferred the other
    ties: int = 0  # the orders disagreed
    unparsed: int = 0  # at least one order had no verdict
    asked: int = 0

    def as_dict(self) -> dict[str, Any]:
        decided = self.wins + self.losses + self.ties
        rate = (self.wins + 0.5 * self.ties) / decided if decided else float("nan")
        low, high = share_ci(self.wins, decided) if decided else (float("nan"), float("nan"))
        return {**vars(self), "win_rate": rate, "strict_win_interval": [low, high]}


@dataclass
class JudgeReport:
    results: dict[str, PairResult] = field(default_factory=dict)  # "tuned_vs_base" → counts

    def as_dict(self) -> dict[str, Any]:
        return {name: result.as_dict() for name, result in self.results.items()}


def judge_answers(
    judge: Judge,
    threads: Mapping[str, str],
    answers: Mapping[str, Mapping[str, Sequence[str]]],
    pairs: Sequence[tuple[str, str]] = (("tuned", "base"), ("tuned", "real")),
    timeout_s: float = 120.0,
) -> JudgeReport:
    """``threads``: example id → the prompt the models saw; ``answers``: model ("real" included) → example id →
    posts. Each pair (x, y) on every thread both answered, in both orders."""
    report = JudgeReport()
    with httpx.Client(timeout=timeout_s) as client:
        for first, second in pairs:
            result = report.results.setdefault(f"{first}_vs_{second}", PairResult())
            for example_id, thread in threads.items():
                x, y = answers.get(first, {}).get(example_id), answers.get(second, {}).get(example_id)
                if not x or not y:
                    continue
                a, b = "\n\n".join(x), "\n\n".join(y)
                forward, backward = ask(client, judge, thread, a, b), ask(client, judge, thread, b, a)
                result.asked += 2
                if forward is None or backward is None:
                    result.unparsed += 1
                elif forward == "A" and backward == "B":
                    result.wins += 1
                elif forward == "B" and backward == "A":
                    result.losses += 1
                else:
                    result.ties += 1
    return report
