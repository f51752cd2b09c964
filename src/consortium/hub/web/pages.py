"""The web interface's routers, in the order the app mounts them (none is in the OpenAPI description)."""

from __future__ import annotations

from consortium.hub.web import (
    auth,
    catalogue,
    challenges,
    forms,
    ledger,
    models,
    overview,
    projects,
    runs,
    votes,
)

ROUTERS = (auth.router, overview.router, catalogue.router, forms.router, projects.router, runs.router,
           models.router, ledger.router, votes.router, challenges.router)
