"""The baselines of the content and viral model cards, tuned on validation only.

Three logistic regressions (scikit-learn ``Pipeline``s), each given no more than the
model it competes with:

``tfidf``          TF-IDF of the post's text → LR. The n-gram set (word 1-grams, word
                   1–2-grams, character 2–5-grams within words, or words + characters)
                   and C are chosen over one *time-based* split: fitted on the training
                   period, scored (ROC AUC) on the validation period, never
                   cross-validation across time.
``context``        the pre-publication context of ``text_data.CONTEXT_FEATURES``
                   (standardised) → LR, C chosen the same way. The viral model's
                   second input alone.
``tfidf_context``  both, concatenated, n-grams and C chosen the same way.

The content model (text alone) is compared with ``tfidf``; the viral model (text +
context) with all three. The selection functions receive the training and validation
rows only — the holdout never reaches them — and the chosen configuration is refitted
on the training rows (the data the neural model is fitted on; validation only
chooses, for both). The strongest baseline is the one with the best validation ROC AUC.

``tune_baseline`` fits each candidate's feature step (TF-IDF vectoriser, scaler) once
on the training rows and searches C over the transformed matrices: the same candidates,
fits, scores and choice as ``GridSearchCV`` with a ``PredefinedSplit`` over the full
pipeline (``grid_search_baseline``, kept as the reference the tests compare against),
without refitting the vectoriser for every C; the chosen candidate's fitted steps are
the refitted model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import StandardScaler

log = logging.getLogger(__name__)

TEXT = "text"
BASELINE_NAMES = ("tfidf", "context", "tfidf_context")
DESCRIPTIONS = {
    "tfidf": "TF-IDF + logistic regression (n-grams and C chosen on validation)",
    "context": "context-only logistic regression (C chosen on validation)",
    "tfidf_context": "TF-IDF + context logistic regression (n-grams and C chosen on validation)",
}
C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
# n-gram sets tried on validation; min_df=2 drops hapaxes (noise at ~10 % positives)
NGRAM_GRID: dict[str, dict[str, Any]] = {
    "word_1": {"analyzer": "word", "ngram_range": (1, 1)},
    "word_1_2": {"analyzer": "word", "ngram_range": (1, 2)},
    "char_wb_2_5": {"analyzer": "char_wb", "ngram_range": (2, 5)},
    "word_1_2+char_wb_2_5": None,  # both (a FeatureUnion of the two above)
}


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


def text_features(ngrams: str) -> TfidfVectorizer | FeatureUnion:
    """The TF-IDF vectoriser of one entry of ``NGRAM_GRID``."""

    def vectorizer(spec: dict[str, Any]) -> TfidfVectorizer:
        return TfidfVectorizer(**spec, min_df=2, sublinear_tf=True, lowercase=True)

    spec = NGRAM_GRID[ngrams]
    if spec is None:
        return FeatureUnion(
            [("word", vectorizer(NGRAM_GRID["word_1_2"])), ("char", vectorizer(NGRAM_GRID["char_wb_2_5"]))]
        )
    return vectorizer(spec)


def make_pipeline(
    name: str, context_columns: Sequence[str] = (), ngrams: str = "word_1_2", c: float = 1.0, seed: int = 0
) -> Pipeline:
    """One baseline's pipeline over a frame with a ``text`` column and the context columns."""
    parts = []
    if name in ("tfidf", "tfidf_context"):
        parts.append(("text", text_features(ngrams), TEXT))
    if name in ("context", "tfidf_context"):
        if not context_columns:
            raise ValueError(f"baseline {name!r} needs context columns")
        parts.append(("context", StandardScaler(), list(context_columns)))
    if not parts:
        raise ValueError(f"unknown baseline {name!r}; one of {BASELINE_NAMES}")
    return Pipeline(
        [
            ("features", ColumnTransformer(parts)),
            ("lr", LogisticRegression(C=c, solver="liblinear", max_iter=2000, random_state=seed)),
        ]
    )


@dataclass
class TunedBaseline:
    """A baseline whose hyper-parameters were chosen on validation, fitted on training rows."""

    name: str
    params: dict[str, Any]  # chosen on validation: {"ngrams": ..., "C": ...}
    val_roc_auc: float  # the validation AUC that chose it
    grid: list[dict[str, Any]] = field(default_factory=list)  # every candidate's val AUC
    model: Pipeline | None = None

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.name]

    @property
    def label(self) -> str:
        """Short human name with the chosen settings, e.g. ``tfidf (word_1_2, C=3)``."""
        chosen = ", ".join(f"{k}={v:g}" if isinstance(v, float) else str(v) for k, v in self.params.items())
        return f"{self.name} ({chosen})"

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """Viral probability of the rows of ``frame`` (``text`` + context columns)."""
        if self.model is None:
            raise ValueError(f"baseline {self.name} is not fitted")
        return self.model.predict_proba(frame)[:, 1].astype(np.float64)

    def refit(
        self, frame: pd.DataFrame, labels: np.ndarray, context_columns: Sequence[str], seed: int = 0
    ) -> TunedBaseline:
        """The same chosen settings fitted on other rows (scoring time: all labelled posts)."""
        model = make_pipeline(
            self.name,
            context_columns,
            c=self.params["C"],
            seed=seed,
            **({"ngrams": self.params["ngrams"]} if "ngrams" in self.params else {}),
        )
        model.fit(frame, np.asarray(labels).astype(int))
        return TunedBaseline(self.name, dict(self.params), self.val_roc_auc, self.grid, model)


def _candidates(name: str) -> list[str | None]:
    """The n-gram sets searched for ``name`` (None: no text features)."""
    return list(NGRAM_GRID) if name in ("tfidf", "tfidf_context") else [None]


def tune_baseline(
    name: str,
    train: pd.DataFrame,
    y_train: np.ndarray,
    val: pd.DataFrame,
    y_val: np.ndarray,
    context_columns: Sequence[str] = (),
    seed: int = 0,
) -> TunedBaseline:
    """Choose n-grams and C of one baseline on the validation period, fitted on training rows.

    Only the training and validation rows are passed in, so the holdout cannot
    influence the choice. Candidates in ``GridSearchCV``'s order (n-gram set, then C),
    each scored by validation ROC AUC of its decision function (sklearn's ``roc_auc``
    scorer); a feature step that cannot be fitted (e.g. an empty vocabulary on tiny
    data) scores NaN for all its C, as ``error_score=np.nan`` does; the first best wins.
    """
    y_tr = np.asarray(y_train).astype(int)
    y_va = np.asarray(y_val).astype(int)
    candidates: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any], Pipeline] | None = None
    for ngrams in _candidates(name):
        kwargs = {"ngrams": ngrams} if ngrams is not None else {}
        template = make_pipeline(name, context_columns, seed=seed, **kwargs)
        features = clone(template.named_steps["features"])
        try:
            x_train = features.fit_transform(train, y_tr)
        except ValueError as exc:  # GridSearchCV's error_score=np.nan, said out loud
            log.warning("baseline %s, n-grams %s: features could not be fitted (%s)", name, ngrams, exc)
            candidates.extend({**kwargs, "C": float(c), "val_roc_auc": float("nan")} for c in C_GRID)
            continue
        x_val = features.transform(val)
        for c in C_GRID:
            lr = clone(template.named_steps["lr"]).set_params(C=c).fit(x_train, y_tr)
            auc = float(roc_auc_score(y_va, lr.decision_function(x_val)))
            entry = {**kwargs, "C": float(c)}
            candidates.append({**entry, "val_roc_auc": auc})
            if np.isfinite(auc) and (best is None or auc > best[0]):
                best = (auc, entry, Pipeline([("features", features), ("lr", lr)]))
    if best is None:
        raise ValueError(f"baseline {name}: no candidate could be scored on validation")
    return TunedBaseline(name, best[1], best[0], candidates, best[2])


def grid_search_baseline(
    name: str,
    train: pd.DataFrame,
    y_train: np.ndarray,
    val: pd.DataFrame,
    y_val: np.ndarray,
    context_columns: Sequence[str] = (),
    seed: int = 0,
) -> TunedBaseline:
    """``tune_baseline`` by ``GridSearchCV`` over the whole pipeline (the reference).

    ``PredefinedSplit`` (training rows fold −1, validation rows fold 0) fits each
    candidate on the training period and scores it on the later validation period;
    the vectoriser is refitted for every C, which is what ``tune_baseline`` avoids.
    """
    grid: dict[str, list] = {"lr__C": list(C_GRID)}
    if name in ("tfidf", "tfidf_context"):
        grid["features__text"] = [text_features(n) for n in NGRAM_GRID]
    both = pd.concat([train, val], ignore_index=True)
    y = np.concatenate([np.asarray(y_train), np.asarray(y_val)]).astype(int)
    fold = np.r_[np.full(len(train), -1), np.zeros(len(val), dtype=int)]
    search = GridSearchCV(
        make_pipeline(name, context_columns, seed=seed),
        grid,
        scoring="roc_auc",
        cv=PredefinedSplit(fold),
        refit=False,
        n_jobs=1,
        error_score=np.nan,
    )
    search.fit(both, y)
    ngram_names = list(NGRAM_GRID)
    candidates = []
    for params, auc in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True):
        entry = {"C": float(params["lr__C"])}
        if "features__text" in params:
            entry = {"ngrams": ngram_names[grid["features__text"].index(params["features__text"])], **entry}
        candidates.append({**entry, "val_roc_auc": float(auc)})
    finite = [c for c in candidates if np.isfinite(c["val_roc_auc"])]
    if not finite:
        raise ValueError(f"baseline {name}: no candidate could be scored on validation")
    best = max(finite, key=lambda c: c["val_roc_auc"])  # first of equals: grid order
    params = {k: v for k, v in best.items() if k != "val_roc_auc"}
    chosen = TunedBaseline(name, params, best["val_roc_auc"], candidates)
    return chosen.refit(train, y_train, context_columns, seed)


def tune_baselines(
    names: Sequence[str],
    train: pd.DataFrame,
    y_train: np.ndarray,
    val: pd.DataFrame,
    y_val: np.ndarray,
    context_columns: Sequence[str] = (),
    seed: int = 0,
) -> dict[str, TunedBaseline]:
    """Each named baseline tuned on validation (see ``tune_baseline``)."""
    return {n: tune_baseline(n, train, y_train, val, y_val, context_columns, seed) for n in names}


def strongest(baselines: dict[str, TunedBaseline]) -> str:
    """Name of the baseline with the best validation ROC AUC (ties: the first listed)."""
    return max(baselines, key=lambda n: baselines[n].val_roc_auc)


def tfidf_logreg_scores(
    train_texts: Sequence[str],
    train_labels: np.ndarray,
    test_texts: Sequence[str],
    ngrams: str = "word_1_2",
    c: float = 1.0,
) -> np.ndarray:
    """Viral probability of ``test_texts`` from a TF-IDF + LR fitted on the training texts."""
    model = make_pipeline("tfidf", ngrams=ngrams, c=c)
    model.fit(pd.DataFrame({TEXT: list(train_texts)}), np.asarray(train_labels).astype(int))
    return model.predict_proba(pd.DataFrame({TEXT: list(test_texts)}))[:, 1]


def word_term_weights(
    tuned: TunedBaseline, frame: pd.DataFrame, labels: np.ndarray, seed: int = 0
) -> tuple[pd.Series, Any, str]:
    """Readable word n-gram weights behind a tuned TF-IDF baseline, for content patterns.

    When the baseline reads words (``word_*`` n-gram sets) its own LR coefficients of
    the word features are returned; when it reads character n-grams only (fragments
    such as ``"eaki"`` say little to a reader) a word 1–2-gram TF-IDF LR with the
    baseline's chosen C is fitted on the same rows and its coefficients are returned.
    Also returns the word analyser (text -> its n-grams) and a note on which it was.
    """
    if tuned.name != "tfidf" or tuned.model is None:
        raise ValueError("word weights need a fitted tfidf baseline")
    if str(tuned.params["ngrams"]).startswith("word"):
        model, note = tuned.model, f"LR weights of the {tuned.label} baseline's word n-grams"
    else:
        model = make_pipeline("tfidf", ngrams="word_1_2", c=float(tuned.params["C"]), seed=seed)
        model.fit(frame[[TEXT]], np.asarray(labels).astype(int))
        note = (
            f"LR weights of word 1-2-grams with the baseline's C={tuned.params['C']:g} (the "
            f"{tuned.label} baseline itself reads character n-grams)"
        )
    features = model.named_steps["features"]
    text = features.named_transformers_["text"]
    vectorizer = dict(text.transformer_list)["word"] if isinstance(text, FeatureUnion) else text
    prefix = "text__word__" if isinstance(text, FeatureUnion) else "text__"
    names = features.get_feature_names_out()
    coef = model.named_steps["lr"].coef_[0]
    keep = np.array([n.startswith(prefix) for n in names])
    weights = pd.Series(coef[keep], index=[n[len(prefix) :] for n in names[keep]])
    return weights.sort_values(ascending=False), vectorizer.build_analyzer(), note
