"""The optional judge's both-orders rule: each pair is asked with the answers as A/B and again swapped, and a
verdict counts only when the two orders agree. The judge's answers come from judges of known habits (``ask``
replaced): the rule is the logic under test, not an endpoint."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from void_pipeline.lib.evaluate import judge
from void_pipeline.lib.evaluate.judge import Judge, judge_answers

THREADS = {"t1": "thread one", "t2": "thread two", "t3": "thread three"}
ANSWERS = {
    "tuned": {"t1": ["tuned one"], "t2": ["tuned two"], "t3": ["tuned three"]},
    "base": {"t1": ["base one"], "t2": ["base two"], "t3": ["base three"]},
    "real": {"t1": ["real one"], "t2": ["real two"]},  # t3 has no real reply: that pair is not asked
}
Habit = Callable[[str, str, str], str | None]


def asked_with(monkeypatch: pytest.MonkeyPatch, habit: Habit) -> list[tuple[str, str, str]]:
    """Replace the judge's endpoint call by ``habit(thread, first, second)``; returns every (thread, A, B) asked."""
    asked: list[tuple[str, str, str]] = []

    def ask(_client: httpx.Client, _judge: Judge, thread: str, first: str, second: str) -> str | None:
        asked.append((thread, first, second))
        return habit(thread, first, second)

    monkeypatch.setattr(judge, "ask", ask)
    return asked


def run() -> dict[str, judge.PairResult]:
    return judge_answers(Judge("http://judge.invalid/v1", "judge"), THREADS, ANSWERS).results


def test_every_pair_is_asked_in_both_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = asked_with(monkeypatch, lambda thread, first, second: "A")
    results = run()
    pairs = [("tuned", "base", "t1"), ("tuned", "base", "t2"), ("tuned", "base", "t3"),
             ("tuned", "real", "t1"), ("tuned", "real", "t2")]  # fmt: skip
    expected = []
    for x, y, t in pairs:
        a, b = ANSWERS[x][t][0], ANSWERS[y][t][0]
        expected += [(THREADS[t], a, b), (THREADS[t], b, a)]
    assert sorted(asked) == sorted(expected)
    assert results["tuned_vs_base"].asked == 6 and results["tuned_vs_real"].asked == 4


def test_a_judge_that_always_picks_the_first_answer_scores_only_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    asked_with(monkeypatch, lambda thread, first, second: "A")
    for result in run().values():
        assert (result.wins, result.losses, result.unparsed) == (0, 0, 0) and result.ties > 0
        assert result.as_dict()["win_rate"] == 0.5


def test_a_verdict_counts_when_both_orders_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    # prefers the tuned answer wherever it stands, except on thread two, where it prefers the other
    def habit(thread: str, first: str, second: str) -> str | None:
        tuned_first = first.startswith("tuned")
        return "A" if tuned_first != (thread == "thread two") else "B"

    asked_with(monkeypatch, habit)
    results = run()
    base, real = results["tuned_vs_base"], results["tuned_vs_real"]
    assert (base.wins, base.losses, base.ties, base.unparsed) == (2, 1, 0, 0)
    assert (real.wins, real.losses, real.ties, real.unparsed) == (1, 1, 0, 0)
    assert base.as_dict()["win_rate"] == pytest.approx(2 / 3)


def test_an_unparseable_answer_in_either_order_is_counted_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    # a clear preference for tuned, but on thread one the swapped order gets no letter back
    def habit(thread: str, first: str, second: str) -> str | None:
        if thread == "thread one" and not first.startswith("tuned"):
            return None
        return "A" if first.startswith("tuned") else "B"

    asked_with(monkeypatch, habit)
    base = run()["tuned_vs_base"]
    assert (base.wins, base.losses, base.ties, base.unparsed) == (2, 0, 0, 1)
    assert base.as_dict()["win_rate"] == 1.0  # the unparsed thread is neither a win nor a tie
