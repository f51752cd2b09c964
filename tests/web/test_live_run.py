"""The live run page in a real Chromium against a real hub and real node processes: the admin starts an
approved project's run with the page's form, lands on the run page and, without reloading it, watches the
curves grow to the last round; each round the stream delivered shows up within a second of its close."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from consortium.launch import HubProcess, start_hub, start_node
from consortium.scenario import ORGS, digits_spec, propose_and_approve, provision_digits

pytestmark = pytest.mark.e2e
OWNERS = ORGS[:2]
ROUNDS = 6
MAX_LATENCY_S = 1.0


@dataclass
class Live:
    hub: HubProcess
    project_id: int


@pytest.fixture(scope="module")
def live(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Two orgs with their digits, their nodes online, and an approved project of six rounds, not started."""
    workdir = tmp_path_factory.mktemp("live")
    hub = start_hub(workdir / "hub")
    nodes = []
    try:
        consortium = provision_digits(hub, workdir, OWNERS)
        nodes = [start_node(hub.url, consortium.org_dirs[org], poll_wait=5.0) for org in OWNERS]
        project = propose_and_approve(consortium, digits_spec("live-digits", OWNERS, rounds=ROUNDS))
        with hub.client() as admin:
            admin.wait_online(list(OWNERS))
        yield Live(hub, project["id"])
    finally:
        for node in nodes:
            node.stop()
        hub.stop()


def test_the_run_page_follows_the_run_to_its_last_round_without_reloading(browser, live: Live) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        problems: list[str] = []
        page.on("response", lambda response: problems.append(f"{response.status} {response.url}")
                if response.status >= 400 else None)
        page.goto(live.hub.url + "/login")
        page.get_by_label("API token").fill(live.hub.admin_token)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(live.hub.url + "/")
        page.goto(f"{live.hub.url}/projects/{live.project_id}")
        page.get_by_role("button", name="Start a run").click()
        page.wait_for_url(f"{live.hub.url}/runs/*")
        run_id = int(page.url.rsplit("/", 1)[1])
        initial = set(page.locator("#rounds-table tr[data-round]").evaluate_all(
            "rows => rows.map(r => r.dataset.round)"))
        page.evaluate("window.notReloaded = true")
        page.locator(f'#rounds-table tr[data-round="{ROUNDS}"]').wait_for(timeout=120_000)
        expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
        assert page.evaluate("window.notReloaded === true"), "the page reloaded"
        shown = page.locator("#rounds-table tr[data-round]").evaluate_all(
            "rows => rows.map(r => [Number(r.dataset.round), Number(r.dataset.shownAt || 0)])")
        points = page.locator('figure[data-key="test.accuracy"] polyline').get_attribute("points")
        with live.hub.client() as admin:
            progress = admin.progress(run_id, after_round=0, wait=0.0)
    finally:
        context.close()
    assert [number for number, _ in shown] == list(range(1, ROUNDS + 1))
    assert len(points.split()) == ROUNDS
    closed_at = {r.round: r.opened_at + r.wall_s for r in progress.rounds}
    latencies = {number: at / 1000 - closed_at[number] for number, at in shown if at}
    assert str(ROUNDS) not in initial and ROUNDS in latencies, (initial, latencies)
    assert len(latencies) >= ROUNDS // 2, f"too few rounds arrived live: {latencies}"
    assert max(latencies.values()) <= MAX_LATENCY_S, latencies
    assert not problems, problems
