"""Wire schema of a project's federated preprocessing (kept out of :mod:`consortium.protocol`, which imports
it): what the spec asks for (:class:`PreprocessingSpec`) and the transform fitted from the nodes' statistics
(:class:`FittedPreprocessing`), which tasks, checkpoints and model cards carry. The math is in
:mod:`consortium.fl.preprocessing`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_CATEGORIES = 1000
"""Most distinct values one categorical column may have (each becomes a feature)."""
ColumnName = Annotated[str, Field(min_length=1, max_length=200)]


class _Wire(BaseModel):
    """:class:`consortium.protocol.Wire`'s settings: unknown keys refused, floats finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PreprocessingSpec(_Wire):
    """How the features are prepared before training, with statistics computed federatedly before round 1
    (each node sends counts, sums, sums of squares, minima, maxima and category counts of its training rows;
    docs/privacy.md says what they reveal). The same transform is applied in simulation, on the nodes, to the
    hub's test set and by the released model."""

    scale: Literal["standardise", "min-max", "none"] = Field(
        default="none", description="numeric features: to mean 0 and variance 1, to [0, 1], or left as they are")
    columns: list[ColumnName] | None = Field(
        default=None, max_length=100_000, description="numeric features to scale (default: every one)")
    categorical: list[ColumnName] = Field(
        default_factory=list, max_length=1000,
        description="feature columns of categories (numeric codes or strings), one-hot encoded (a value unseen "
        "in training gives all zeros; `model predict` refuses it unless told to allow it)")
    max_categories: int = Field(default=64, ge=2, le=MAX_CATEGORIES,
                                description="a categorical column with more distinct values is refused")
    impute: Literal["mean", "most_frequent"] | None = Field(
        default=None, description="missing values: numeric features get their federated mean ('mean') or "
        "most frequent value ('most_frequent'), categorical ones their most frequent category; none: a "
        "missing value is an error")

    @field_validator("columns", "categorical")
    @classmethod
    def _unique(cls, names: list[str] | None) -> list[str] | None:
        if names is not None and len(set(names)) != len(names):
            raise ValueError("a column is listed twice")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> PreprocessingSpec:
        overlap = sorted(set(self.columns or ()) & set(self.categorical))
        if overlap:
            raise ValueError(f"column(s) {overlap} are both scaled and categorical")
        if self.columns is not None and self.scale == "none":
            raise ValueError("columns names features to scale, but scale is 'none'")
        if self.scale == "none" and not self.categorical and self.impute is None:
            raise ValueError("preprocessing does nothing: set scale, categorical or impute (or leave it out)")
        return self


class OneHotColumn(_Wire):
    column: int = Field(ge=0, description="input feature index")
    name: str
    categories: list[float] = Field(min_length=1, max_length=MAX_CATEGORIES)
    labels: list[str] | None = Field(
        default=None, description="a column of strings: each category's text, in the order of ``categories`` "
        "(which hold their codes, consortium.fl.categories)")

    @model_validator(mode="after")
    def _labelled(self) -> OneHotColumn:
        if self.labels is not None and len(self.labels) != len(self.categories):
            raise ValueError("labels must name every category")
        return self


class FittedPreprocessing(_Wire):
    """A fitted transform: fill missing values, scale the numeric features ``(x - shift) / scale`` (in
    ``numeric`` order), then append each categorical column one-hot. Output width: ``output_features``."""

    input_features: int = Field(ge=1)
    feature_names: list[str]
    fill: list[float] | None = Field(default=None, description="per input feature; None: no imputation")
    numeric: list[int]
    shift: list[float]
    scale: list[float]
    one_hot: list[OneHotColumn] = Field(default_factory=list)
    rows: int = Field(ge=0, description="training rows the statistics covered")
    spec: PreprocessingSpec

    @model_validator(mode="after")
    def _shapes(self) -> FittedPreprocessing:
        if not len(self.numeric) == len(self.shift) == len(self.scale):
            raise ValueError("numeric, shift and scale must have one entry per numeric feature")
        if self.fill is not None and len(self.fill) != self.input_features:
            raise ValueError("fill must have one value per input feature")
        if len(self.feature_names) != self.input_features:
            raise ValueError("feature_names must name every input feature")
        used = self.numeric + [c.column for c in self.one_hot]
        if len(set(used)) != len(used) or any(i >= self.input_features for i in used):
            raise ValueError("each input feature is numeric or categorical at most once, within input_features")
        if any(s <= 0 for s in self.scale):
            raise ValueError("scale values must be positive")
        return self

    @property
    def output_features(self) -> int:
        return len(self.numeric) + sum(len(c.categories) for c in self.one_hot)
