"""What anonymisation cost, measured by a reference model: the same classifier (scikit-learn's logistic
regression on one-hot encoded categories and standardised numbers), seeded and cross-validated, trained on
the original table and on the anonymised one to predict a declared target column; both accuracies, with the
majority-class rate as the floor.

Generalised quasi-identifiers (``30-39``, ``AB1|AB2``, ``123**``) are categories to the model, as they are to
anyone who downloads the table. Suppressed rows are simply absent from the anonymised table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from consortium.node.anonymity import AnonymityError, is_numeric

MODEL = "logistic regression (one-hot categories, standardised numbers), stratified k-fold"


def _accuracy(frame: pd.DataFrame, target: str, seed: int, folds: int) -> float | None:
    features = frame.drop(columns=[target])
    labels = frame[target].astype(str)
    if features.empty or labels.nunique() < 2:
        return None
    folds = min(folds, int(labels.value_counts().min()))
    if folds < 2:
        return None
    numbers = [c for c in features.columns if is_numeric(features[c])]
    words = [c for c in features.columns if c not in numbers]
    features = features.astype({c: str for c in words})
    encode = ColumnTransformer([("numbers", StandardScaler(), numbers),
                                ("categories", OneHotEncoder(handle_unknown="ignore"), words)])
    model = make_pipeline(encode, LogisticRegression(max_iter=2000))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return round(float(np.mean(cross_val_score(model, features, labels, cv=split))), 4)


def reference_accuracy(original: pd.DataFrame, anonymised: pd.DataFrame, target: str,
                       identifiers: Sequence[str] = (), seed: int = 0, folds: int = 5) -> dict:
    """The reference model's cross-validated accuracy on ``original`` (without its direct identifiers) and
    on ``anonymised``, for ``target``; None for a table too small or too uniform to cross-validate."""
    if target not in original.columns or target not in anonymised.columns:
        raise AnonymityError(f"--target {target!r} is not a column of the table")
    before = original.drop(columns=[c for c in identifiers if c in original.columns])
    majority = round(float(original[target].astype(str).value_counts(normalize=True).max()), 4)
    return {"target": target, "model": MODEL, "seed": seed, "folds": folds, "majority_rate": majority,
            "accuracy_original": _accuracy(before, target, seed, folds),
            "accuracy_anonymised": _accuracy(anonymised, target, seed, folds)}
