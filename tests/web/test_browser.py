"""The web pages in a real Chromium against a real hub process with real node processes: log in through the
form, browse and filter the catalogue, open a dataset card and the model a federated run made; another org's
user gets a 404 page for a private dataset; the pages work by keyboard and at a phone's width."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from consortium.launch import HubProcess, start_hub, start_node
from consortium.node import actions
from consortium.scenario import ORGS, DigitsConsortium, digits_spec, propose_and_approve, provision_digits

pytestmark = pytest.mark.e2e
OWNERS = ORGS[:2]


@dataclass
class World:
    hub: HubProcess
    tokens: dict[str, str]
    model_id: int


def register_private_dataset(consortium: DigitsConsortium, workdir: Path, org: str, name: str) -> None:
    frame = pd.read_csv(workdir / "data" / f"{org}.csv")
    path = workdir / "data" / f"{name}.csv"
    frame.iloc[: len(frame) // 2].to_csv(path, index=False)
    loaded, card = actions.prepare_dataset(path, name, "CC-BY-4.0", target="label", visibility="private",
                                           description="kept to its owner")
    with consortium.org_client(org) as client:
        actions.register_dataset(client, consortium.org_dirs[org], loaded, card)


@pytest.fixture(scope="module")
def world(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Two orgs with their digits, a private dataset of the first, a steward of each, and the model of a
    two-round run their nodes trained."""
    workdir = tmp_path_factory.mktemp("browser")
    hub = start_hub(workdir / "hub")
    nodes = []
    try:
        consortium = provision_digits(hub, workdir, OWNERS)
        register_private_dataset(consortium, workdir, OWNERS[0], "ward-notes")
        with hub.client() as admin:
            tokens = {org: admin.create_user(f"steward-{org}", "steward", org)["token"] for org in OWNERS}
        nodes = [start_node(hub.url, consortium.org_dirs[org], poll_wait=5.0) for org in OWNERS]
        project = propose_and_approve(consortium, digits_spec("browser-digits", OWNERS, rounds=2))
        with hub.client() as admin:
            admin.wait_online(list(OWNERS))
            run = admin.start_run(project["id"])
            for _ in range(120):
                found = admin.run(run["id"])
                if found["status"] != "running":
                    break
                admin.progress(run["id"], after_round=found["current_round"], wait=2.0)
            assert found["status"] == "completed", hub.log_tail(40)
        yield World(hub, tokens, found["model_id"])
    finally:
        for node in nodes:
            node.stop()
        hub.stop()


@pytest.fixture
def page(browser) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def log_in(page, world: World, org: str) -> None:
    page.goto(world.hub.url + "/login")
    page.get_by_label("API token").fill(world.tokens[org])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(world.hub.url + "/")


def test_a_member_logs_in_browses_the_catalogue_and_opens_a_card_and_the_model(page, world: World) -> None:
    log_in(page, world, OWNERS[0])
    assert page.get_by_role("button", name="Log out").is_visible()
    assert world.tokens[OWNERS[0]] not in page.url
    assert world.tokens[OWNERS[0]] not in world.hub.log_tail(500)
    assert all(world.tokens[OWNERS[0]] not in c["value"] for c in page.context.cookies())
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Catalogue").click()
    page.get_by_label("Search", exact=True).fill("ward")
    page.get_by_role("button", name="Filter").click()
    links = page.locator("main table a")
    assert links.all_inner_texts() == [f"{OWNERS[0]}/ward-notes"]
    page.get_by_label("Search", exact=True).fill("")
    page.get_by_label("Owner").select_option(OWNERS[1])
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name=f"{OWNERS[1]}/digits").click()
    assert page.get_by_role("heading", level=1).inner_text() == f"{OWNERS[1]}/digits"
    assert page.get_by_text("CC-BY-4.0").first.is_visible()
    assert page.get_by_role("link", name=re.compile("Croissant")).is_visible()
    page.goto(f"{world.hub.url}/models/{world.model_id}")
    assert page.get_by_role("heading", level=1).inner_text() == f"Model {world.model_id}"
    assert page.get_by_role("heading", name="Licence obligations").is_visible()
    weights = page.get_by_role("link", name="Weights (safetensors)")
    with page.expect_download() as download:
        weights.click()
    assert Path(download.value.path()).stat().st_size > 0


def test_another_orgs_user_gets_a_404_page_for_a_private_dataset(page, world: World) -> None:
    log_in(page, world, OWNERS[1])
    response = page.goto(f"{world.hub.url}/datasets/{OWNERS[0]}/ward-notes")
    assert response.status == 404
    assert page.get_by_role("alert").inner_text() == f"no dataset '{OWNERS[0]}/ward-notes'"
    page.goto(world.hub.url + "/catalogue")
    assert "ward-notes" not in page.locator("main").inner_text()


def test_the_keyboard_reaches_the_navigation_and_the_login_form_is_labelled(page, world: World) -> None:
    page.goto(world.hub.url + "/login")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    reached = []
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.closest('nav') !== null"))
    assert any(reached)
    token = page.get_by_label("API token")
    assert token.get_attribute("type") == "password"
    token.focus()
    page.keyboard.type("csm_wrong")
    page.keyboard.press("Enter")
    page.wait_for_load_state()
    assert page.locator("#token-error").inner_text() == "API token is not valid"
    assert page.get_by_label("API token").get_attribute("aria-describedby") == "token-error"


def test_pages_fit_a_phone_screen(browser, world: World) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        log_in(page, world, OWNERS[0])
        paths = ("/", "/catalogue", f"/datasets/{OWNERS[0]}/digits", f"/models/{world.model_id}", "/projects")
        for path in paths:
            page.goto(world.hub.url + path)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    finally:
        context.close()


def test_no_page_breaks_its_content_security_policy(page, world: World) -> None:
    """Every page, its scripts and their fetches run under the hub's security headers: no CSP violation, no
    script error in the console."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.text} at {m.location.get('url')}") if m.type == "error"
            and not m.location.get("url", "").endswith("/favicon.ico") else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    log_in(page, world, OWNERS[0])
    paths = ["/", "/members", "/catalogue", "/projects", "/models", "/challenges", "/ledger", "/ledger/1",
             "/ledger/checkpoints", f"/models/{world.model_id}", f"/datasets/{OWNERS[0]}/ward-notes"]
    for path in paths:
        response = page.goto(world.hub.url + path)
        assert response is not None and response.status == 200, path
        assert response.headers["x-frame-options"] == "DENY", path
        page.wait_for_load_state("networkidle")
    assert problems == []
