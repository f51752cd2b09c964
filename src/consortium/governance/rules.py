"""Decision rules: pure functions deciding whether a project may run.

For now the one rule is that the owner of every dataset a project uses has approved it. The hub's project
service asks an :class:`ApprovalRule`, so the consortium's voting rules can replace this one later.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Decision:
    approved: bool
    missing: tuple[str, ...]
    reason: str


class ApprovalRule(Protocol):
    name: str

    def decide(self, required_orgs: Iterable[str], approving_orgs: Iterable[str]) -> Decision: ...


class DataOwnersUnanimous:
    """A project runs only once every org whose data it uses has approved it."""

    name = "data-owners-unanimous"

    def decide(self, required_orgs: Iterable[str], approving_orgs: Iterable[str]) -> Decision:
        required = sorted(set(required_orgs))
        approved = set(approving_orgs)
        missing = tuple(org for org in required if org not in approved)
        if missing:
            return Decision(False, missing, f"waiting for approval from: {', '.join(missing)}")
        return Decision(True, (), "every data owner approved")
