"""What the consortium requires of a table before it is published as open data (the policy's ``open_data``
section, changed by a ``change_policy`` vote like every rule). The owner's node applies it before a publish
(its command line may only tighten it) and the hub refuses a publish whose anonymisation report falls short.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OpenDataRules(BaseModel):
    """The anonymity a published table about people must show."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    min_k: int = Field(default=5, ge=1, le=1_000_000,
                       description="every equivalence class over the quasi-identifiers holds at least k rows")
    min_l: int = Field(default=2, ge=1, le=1_000_000,
                       description="each class holds at least l distinct values of every sensitive column")
    max_t: float | None = Field(default=None, ge=0.0, le=1.0, description=(
        "t-closeness: each class's sensitive distribution within Earth mover's distance t of the whole "
        "table's; none: not required"))
    people_need_quasi: bool = Field(default=True, description=(
        "a table declared to be about people must declare its quasi-identifiers (or be DP synthetic data)"))

    def tightened(self, k: int | None, l_required: int | None, t_allowed: float | None) -> OpenDataRules:
        """These rules made stricter by an owner's own k, l or t (a looser value than the policy's is
        ignored)."""
        t_values = [t for t in (self.max_t, t_allowed) if t is not None]
        return self.model_copy(update={"min_k": max(self.min_k, k or 1),
                                       "min_l": max(self.min_l, l_required or 1),
                                       "max_t": min(t_values) if t_values else None})
