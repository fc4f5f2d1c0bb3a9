"""The call-validity verdict (lib/evaluate/report.py): a difference is claimed only where the 95% intervals part."""

from __future__ import annotations

from typing import Any

from void_pipeline.lib.evaluate.report import call_validity_verdict


def report(tuned: tuple[float, float, float], base: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "scores": {"tuned": {"call_validity": tuned[0]}, "base": {"call_validity": base[0]}},
        "intervals": {"tuned": {"call_validity": list(tuned[1:])}, "base": {"call_validity": list(base[1:])}},
    }


def test_intervals_apart_say_the_tuned_model_answers_in_the_handlers_shape_more_often() -> None:
    # 7 of 24 valid vs 0 of 24: Wilson's 95% intervals [0.149, 0.492] and [0, 0.138]
    verdict = call_validity_verdict(report((0.292, 0.149, 0.492), (0.0, 0.0, 0.138)))
    assert verdict.startswith("tuned answers in the handler's shape more often than base: ")
    assert "0.29 [0.15, 0.49] vs 0.00 [0.00, 0.14]" in verdict


def test_overlapping_intervals_claim_no_learning() -> None:
    # 3 of 24 vs 1 of 24
    verdict = call_validity_verdict(report((0.125, 0.043, 0.310), (0.042, 0.007, 0.202)))
    assert verdict.startswith("no clear difference") and "overlap" in verdict and "more often" not in verdict


def test_a_base_model_ahead_is_said_too() -> None:
    verdict = call_validity_verdict(report((0.0, 0.0, 0.138), (0.292, 0.149, 0.492)))
    assert "LESS often than base" in verdict


def test_a_model_without_scores_gets_no_verdict() -> None:
    verdict = call_validity_verdict({"scores": {"tuned": {"call_validity": 0.5}}, "intervals": {}})
    assert verdict.startswith("no verdict")
