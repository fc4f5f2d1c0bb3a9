"""Authorship: would a stylometric classifier take a post for the agent's?

Character n-gram TF-IDF and logistic regression (the Computational Turing Test's kind of detector), trained on the
train split only: the agent's replies against the other authors' posts in the same threads. Its pass rate on
generated posts says how often a model passes as the agent; its pass rate on the agent's real held-out replies is
the ceiling to read it against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline


@dataclass
class AuthorshipClassifier:
    pipeline: Pipeline
    trained_on: tuple[int, int]  # (agent posts, other posts)
    cross_validated_accuracy: float

    @classmethod
    def fit(cls, agent: Sequence[str], others: Sequence[str], seed: int = 0) -> AuthorshipClassifier:
        """ValueError when either side has fewer than 5 posts (nothing to learn a style from)."""
        agent = [t for t in agent if t.strip()]
        others = [t for t in others if t.strip()]
        if len(agent) < 5 or len(others) < 5:
            raise ValueError(
                f"authorship needs at least 5 posts of the agent and 5 of others, got {len(agent)} and {len(others)}"
            )
        pipeline = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True, max_features=200_000),
            LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed),
        )
        texts, labels = [*agent, *others], [1] * len(agent) + [0] * len(others)
        folds = min(5, len(agent), len(others))
        accuracy = float(cross_val_score(pipeline, texts, labels, cv=folds).mean()) if folds >= 2 else float("nan")
        pipeline.fit(texts, labels)
        return cls(pipeline, (len(agent), len(others)), accuracy)

    def agent_probability(self, posts: Sequence[str]) -> list[float]:
        if not posts:
            return []
        probabilities: Any = self.pipeline.predict_proba(list(posts))
        return [float(p) for p in probabilities[:, 1]]

    def pass_rate(self, posts: Sequence[str]) -> float:
        """The share of ``posts`` the classifier takes for the agent's (NaN for none)."""
        scores = self.agent_probability([p for p in posts if p.strip()])
        return sum(s >= 0.5 for s in scores) / len(scores) if scores else float("nan")
