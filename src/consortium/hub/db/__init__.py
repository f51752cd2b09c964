"""The hub's database: tables (``models``, ``challenge_models``, ``open_data_models``, ``catalogue_models``,
``lease_models``),
sessions and migrations."""

from consortium.hub.db import challenge_models  # noqa: F401  (its tables join Base.metadata)
from consortium.hub.db import lease_models  # noqa: F401  (its tables join Base.metadata)
from consortium.hub.db import open_data_models  # noqa: F401  (its tables join Base.metadata)
from consortium.hub.db import catalogue_models  # noqa: F401  (tables; its events keep them current)
