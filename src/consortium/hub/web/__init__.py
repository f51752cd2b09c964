"""The hub's web interface: server-rendered pages (Jinja2, autoescaped) over the same services and the same
principal as the API, logged in by a session cookie (:mod:`.sessions`); :mod:`.pages` lists the routers."""
