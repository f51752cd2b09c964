"""The model page states the kind of differential privacy its card records: client-level (who added the
noise) or sample-level DP-SGD (each record protected), with each source's guarantee."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from consortium.hub.web.lineage import layout
from consortium.hub.web.render import NAV, templates

GUARANTEE = {"epsilon": 1.5, "delta": 1e-5, "mechanism": "DP-SGD (sample-level)", "accountant": "dp-accounting RDP"}


def render(privacy: dict) -> str:
    model = SimpleNamespace(id=3, project_id=1, project=SimpleNamespace(name="p"), version=1, status="trained",
                            released_at=None, visibility="members", license="CC0-1.0", params_sha256="0" * 64)
    return templates.get_template("model.html").render(
        who=None, nav=NAV, path="/models/3", csrf="", title="Model 3", model=model, card={"privacy": privacy},
        versions=[], obligations={}, privacy=privacy, may_download=False, images=[], files=[], sees_project=False,
        plain=str, lineage=layout([], []), box_width=0, box_height=0, contributions=None)


@pytest.mark.parametrize(("privacy", "says"), [
    ({"mechanism": "dp_sgd", "unit": "record", "per_dataset": {"north/a": GUARANTEE}},
     "Sample-level differential privacy (DP-SGD)"),
    ({"noise": "local", "per_dataset": {"north/a": GUARANTEE}}, "noise added by each node"),
])
def test_the_page_names_the_mechanism_and_each_source_guarantee(privacy: dict, says: str) -> None:
    html = render(privacy)
    assert says in html and "north/a" in html and "1.5" in html
