"""The web interface's routers, in the order the app mounts them (none is in the OpenAPI description)."""

from __future__ import annotations

from consortium.hub.web import auth, catalogue, models, overview, projects, runs

ROUTERS = (auth.router, overview.router, catalogue.router, projects.router, runs.router, models.router)
