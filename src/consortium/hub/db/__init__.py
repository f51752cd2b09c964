"""The hub's database: tables (``models``, ``challenge_models``), sessions and migrations."""

from consortium.hub.db import challenge_models  # noqa: F401  (its tables join Base.metadata)
