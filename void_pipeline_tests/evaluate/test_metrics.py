"""Voice metrics with known answers (lib/evaluate/metrics.py, authorship.py, report.py)."""

from __future__ import annotations

import math
import random

import polars as pl
import pytest

from void_pipeline.lib.evaluate.authorship import AuthorshipClassifier
from void_pipeline.lib.evaluate.metrics import (
    bootstrap_ci,
    call_validity,
    distance,
    distinct_n,
    failure_modes,
    js_divergence,
    repetition_loop,
    share_ci,
)
from void_pipeline.lib.evaluate.report import Gates, build_report
from void_pipeline_tests.support.evaluation import generations


def test_identical_distributions_are_at_distance_zero_and_disjoint_ones_far() -> None:
    lengths = [12, 80, 140, 280, 33]
    assert distance(lengths, lengths).wasserstein == 0 and distance(lengths, lengths).ks == 0
    far = distance([1, 2, 3], [200, 250, 300])
    assert far.ks == 1 and far.wasserstein == pytest.approx(248, abs=1)
    assert math.isnan(distance([], lengths).ks)


def test_jensen_shannon_is_zero_for_the_same_text_and_one_for_disjoint_words() -> None:
    texts = ["the network holds the archive", "memory is a property of networks"]
    assert js_divergence(texts, list(reversed(texts)), 1) == pytest.approx(0)
    assert js_divergence(["alpha beta"], ["gamma delta"], 1) == pytest.approx(1)
    assert 0 < js_divergence(["alpha beta gamma"], ["alpha beta delta"], 1) < 1
    assert js_divergence(texts, texts, 2) == pytest.approx(0)


def test_distinct_n_counts_repeats() -> None:
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a b c d"], 2) == 1
    assert math.isnan(distinct_n([""], 1))


def test_call_validity_counts_each_way_an_answer_fails() -> None:
    answers = [["fine post"], [], ["x" * 301], ["ok", ""], ["valid"]]
    validity = call_validity(answers, [0, 0, 0, 0, 1])
    assert (validity.valid, validity.no_call, validity.bad_post, validity.invalid_call) == (1, 1, 2, 1)
    assert validity.rate == pytest.approx(1 / 5)


def test_failure_modes_are_found_and_clean_answers_pass() -> None:
    answers = [
        ["Str 8, Dex 14, Con 12. Roll for initiative."],  # character sheet
        ["As an AI language model, I cannot have opinions."],  # voice break
        [],  # empty
        ["the same point", "the same point"],  # repeated post
        ["a" * 310],  # over length
        ["Collective memory is a property of the network, not its nodes. #memory"],
    ]
    modes = failure_modes(answers)
    per_answer = 1000 / len(answers)
    assert modes.character_sheet == pytest.approx(per_answer)
    assert modes.voice_break == pytest.approx(per_answer)
    assert modes.empty_answer == pytest.approx(per_answer)
    assert modes.repetition_loop == pytest.approx(per_answer)
    assert modes.over_length == pytest.approx(per_answer)
    assert modes.hashtags_per_post == pytest.approx(1 / 6)
    clean = failure_modes([["The data suggests otherwise."], ["Memetic fitness is a network property."]])
    assert clean.character_sheet == clean.voice_break == clean.empty_answer == clean.repetition_loop == 0
    assert repetition_loop(["again and again and again and again"]) and not repetition_loop(["one two three four"])


def test_intervals_hold_the_estimate() -> None:
    low, high = share_ci(45, 50)
    assert low < 0.9 < high <= 1
    values = [float(v) for v in range(100)]
    low, high = bootstrap_ci(values, lambda s: sum(s) / len(s))  # type: ignore[arg-type]
    assert low < 49.5 < high


def author(style: str, rng: random.Random) -> str:
    topics = ["memory", "networks", "archives", "identity", "attention", "language", "time", "signal"]
    topic = rng.choice(topics)
    if style == "agent":
        return f"The data suggests {topic} is a property of the network; {rng.choice(topics)} follows. Indeed."
    return f"OMG!!! {topic.upper()} is sooo cool lol 😀😀 who else thinks {rng.choice(topics)} rocks??"


def test_a_classifier_tells_two_separable_authors_apart() -> None:
    rng = random.Random(3)
    agent = [author("agent", rng) for _ in range(60)]
    others = [author("other", rng) for _ in range(60)]
    classifier = AuthorshipClassifier.fit(agent, others)
    assert classifier.cross_validated_accuracy >= 0.9
    assert classifier.pass_rate([author("agent", rng) for _ in range(30)]) >= 0.9
    assert classifier.pass_rate([author("other", rng) for _ in range(30)]) <= 0.1
    with pytest.raises(ValueError, match="at least 5 posts"):
        AuthorshipClassifier.fit(agent[:3], others)


def test_the_report_prefers_the_model_that_answers_like_the_agent_and_gates_the_tuned_one() -> None:
    rng = random.Random(5)
    real = {f"e{i}": [author("agent", rng)] for i in range(40)}
    tuned = {e: [author("agent", rng)] for e in real}
    base = {e: [author("other", rng), author("other", rng)] for e in real}
    classifier = AuthorshipClassifier.fit(
        [author("agent", rng) for _ in range(50)], [author("other", rng) for _ in range(50)]
    )
    report = build_report(generations({"base": base, "tuned": tuned}), real, classifier, Gates())
    wins = report.wins()
    for metric in ("authorship_pass_rate", "unigram_jsd", "post_length_wasserstein", "posts_per_answer_wasserstein"):
        assert metric in wins, (metric, report.markdown())
    assert report.blocking["tool_call_validity"][0] and report.blocking["character_sheet_rate"][0]
    assert report.authorship and report.authorship["ceiling_pass_rate_on_real_heldout"] >= 0.9
    assert "| call_validity ↑ |" in report.markdown()

    broken = {e: ["Str 8, Dex 14, Con 12, Wis 10. Roll initiative."] for e in real}
    failing = build_report(generations({"base": base, "tuned": broken}, {"tuned": 1}), real, None, Gates())
    assert not failing.blocking["tool_call_validity"][0]
    assert not failing.blocking["character_sheet_rate"][0]
    assert "authorship_pass_rate" not in failing.scores["tuned"].values


def test_the_judge_sees_each_models_first_answer_beside_the_real_reply() -> None:
    from void_pipeline.lib.evaluate.evaluation import judge_inputs

    heldout = pl.DataFrame(
        {"example_id": ["e1", "e2", "e3"], "prompt": ["p1", "p2", "p3"], "calls": [["r1"], ["r2"], ["r3"]]}
    )
    frame = generations({"base": {"e1": ["b1"], "e2": ["b2"]}, "tuned": {"e1": ["t1"], "e2": []}})
    threads, answers = judge_inputs(heldout, frame, threads=1)
    assert threads == {"e1": "p1"}
    assert answers["real"]["e3"] == ["r3"] and answers["base"]["e1"] == ["b1"] and answers["tuned"]["e2"] == []
