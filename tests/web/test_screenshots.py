"""The README's screenshots, taken by the suite from a real consortium: two orgs' nodes train a small digits
project (with leave-one-out valuation), its model is released by their votes, and Chromium photographs the run
page and the model page at 1280 px. The images always go to a temporary folder and must be PNGs; with
``CONSORTIUM_SCREENSHOTS=1`` they also replace ``docs/img/``. The same pages, at a 390 px phone's width, must
not scroll sideways (wide tables and the lineage drawing scroll inside their own box)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from consortium.launch import HubProcess, start_hub, start_node
from consortium.scenario import ORGS, digits_spec, propose_and_approve, provision_digits, release_by_vote

pytestmark = pytest.mark.e2e
OWNERS = ORGS[:2]
ROUNDS = 3
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PHONE_WIDTH = 390


@dataclass
class Trained:
    hub: HubProcess
    project_id: int
    run_id: int
    model_id: int
    release_id: int


@pytest.fixture(scope="module")
def trained(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """A finished run of two orgs' digits and its model, released to the members by the owners' votes."""
    workdir = tmp_path_factory.mktemp("shots")
    hub = start_hub(workdir / "hub")
    nodes = []
    try:
        consortium = provision_digits(hub, workdir, OWNERS)
        nodes = [start_node(hub.url, consortium.org_dirs[org], poll_wait=5.0) for org in OWNERS]
        spec = digits_spec("digits-demo", OWNERS, rounds=ROUNDS, valuation={"method": "leave-one-out"})
        project = propose_and_approve(consortium, spec)
        with hub.client() as admin:
            admin.wait_online(list(OWNERS))
            run_id = admin.start_run(project["id"])["id"]
            deadline = time.monotonic() + 240
            while (progress := admin.progress(run_id, wait=5.0)).run.status == "running":
                assert time.monotonic() < deadline, "the run did not finish within 240 s"
            assert progress.run.status == "completed", progress.run
            model_id = admin.progress(run_id).run.model_id
            licence = admin.model(model_id)["license"]
        release = release_by_vote(consortium, model_id, licence, OWNERS)
        yield Trained(hub, project["id"], run_id, model_id, release["id"])
    finally:
        for node in nodes:
            node.stop()
        hub.stop()


def logged_in_page(browser, hub: HubProcess, width: int):
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(hub.url + "/login")
    page.get_by_label("API token").fill(hub.admin_token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(hub.url + "/")
    return context, page


def test_the_readme_screenshots_of_the_run_and_model_pages(browser, trained: Trained,
                                                           tmp_path: Path) -> None:
    context, page = logged_in_page(browser, trained.hub, 1280)
    shots = {"run-page.png": f"/runs/{trained.run_id}", "model-page.png": f"/models/{trained.model_id}"}
    try:
        for name, path in shots.items():
            page.goto(trained.hub.url + path)
            page.screenshot(path=str(tmp_path / name), full_page=True)
        model_html = page.content()
    finally:
        context.close()
    assert 'aria-labelledby="lineage"' in model_html and "Release of v1" in model_html
    assert f'<a href="/proposals/{trained.release_id}">' in model_html
    assert "Contributions" in model_html
    for name in shots:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, name
        assert int.from_bytes(data[16:20], "big") == 1280, name  # the IHDR width
        if os.environ.get("CONSORTIUM_SCREENSHOTS") == "1":
            DOCS_IMG.mkdir(exist_ok=True)
            (DOCS_IMG / name).write_bytes(data)


def test_no_page_scrolls_sideways_on_a_phone(browser, trained: Trained) -> None:
    context, page = logged_in_page(browser, trained.hub, PHONE_WIDTH)
    paths = ["/", "/members", "/catalogue", f"/datasets/{OWNERS[0]}/digits", "/projects",
             f"/projects/{trained.project_id}", f"/runs/{trained.run_id}", "/models",
             f"/models/{trained.model_id}", "/ledger", "/ledger/1", "/challenges", "/projects/new"]
    widths = {}
    try:
        for path in paths:
            page.goto(trained.hub.url + path)
            widths[path] = page.evaluate("document.documentElement.scrollWidth")
    finally:
        context.close()
    assert {path: w for path, w in widths.items() if w > PHONE_WIDTH} == {}, widths
