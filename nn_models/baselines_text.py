"""The named baseline of the content and viral model cards: TF-IDF + logistic regression.

Word uni- and bigrams (scikit-learn's ``TfidfVectorizer(ngram_range=(1, 2))``) and a
``LogisticRegression`` fitted on the training texts only, scored on the holdout with
the same metrics as the neural models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline

BASELINE_NAME = "TF-IDF + logistic regression"


def binary_metrics(y_true: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """ROC AUC and average precision; NaN when the labels hold a single class."""
    y = np.asarray(y_true).astype(int)
    score = np.asarray(score, dtype=float)
    if y.min(initial=0) == y.max(initial=0):
        return {"roc_auc": float("nan"), "average_precision": float("nan")}
    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "average_precision": float(average_precision_score(y, score)),
    }


def fit_tfidf_logreg(texts: Sequence[str], labels: np.ndarray, seed: int = 0) -> Pipeline:
    """TF-IDF (word 1–2-grams) → logistic regression, fitted on ``texts``."""
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2)),
        LogisticRegression(max_iter=2000, random_state=seed),
    )
    return model.fit(list(texts), np.asarray(labels).astype(int))


def tfidf_logreg_scores(
    train_texts: Sequence[str], train_labels: np.ndarray, test_texts: Sequence[str]
) -> np.ndarray:
    """Viral probability of ``test_texts`` from a baseline fitted on the training texts."""
    return fit_tfidf_logreg(train_texts, train_labels).predict_proba(list(test_texts))[:, 1]
