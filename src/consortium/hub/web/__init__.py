"""The hub's web interface: server-rendered pages (Jinja2, autoescaped) over the same services and the same
principal as the API, logged in by a session cookie (:mod:`.sessions`); :mod:`.pages` lists the routers.

A new page: a router module of its own (``APIRouter(route_class=WebRoute, include_in_schema=False)``, added to
:data:`.pages.ROUTERS`), each route marked :func:`consortium.hub.gate.web` (the gate resolves the cookie; the
route reads :func:`.render.caller`, None for anonymous), services called with that principal, and the answer
:func:`.render.page`. A form that changes anything posts ``csrf`` (the base layout's ``csrf`` value) and its
handler calls :func:`.render.csrf_refused` before anything else; :func:`.render.form` reads the fields.
"""
