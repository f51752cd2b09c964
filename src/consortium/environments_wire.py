"""Wire schemas of RL environment cards (kept out of :mod:`consortium.protocol`, the rest of the API's)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, model_validator

from consortium.protocol import NAME_PATTERN, SPDX_PATTERN, GrantValue, Visibility, Wire


class EnvironmentCardIn(Wire):
    """What a node tells the hub about a local RL environment: its gymnasium id and a commitment to its
    physics. The physics (and the salt of the commitment) are published, or kept on the node when private."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=10_000)
    env_id: str = Field(min_length=1, max_length=100, description="gymnasium id, e.g. CartPole-v1")
    physics: dict[str, float] | None = Field(
        default=None,
        description="every physics value (defaults filled in); None when the org keeps them private",
    )
    physics_salt: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{32}$", description="published with the physics, withheld with them"
    )
    physics_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of canonical JSON {env_id, physics, salt} (fl.environments.physics_digest)",
    )
    license: str = Field(pattern=SPDX_PATTERN, max_length=200)
    visibility: Visibility = Visibility.members

    @model_validator(mode="after")
    def _physics_and_salt_together(self) -> EnvironmentCardIn:
        if (self.physics is None) != (self.physics_salt is None):
            raise ValueError("physics and physics_salt are published together or not at all")
        return self


class EnvironmentCardOut(EnvironmentCardIn):
    id: int
    org: str
    observation_size: int
    created_at: datetime
    process: GrantValue = "members"
    download: GrantValue = "nobody"
