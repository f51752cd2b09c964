"""The whole story in a real Chromium, against a real hub with real node processes: a researcher logs in,
browses the catalogue, opens a dataset card and proposes a project; each owner's steward votes in the page,
signing with the org's key file; the researcher starts the run, watches its curve grow live to the last
round, opens the model, checks its lineage and licence, downloads the weights (their SHA-256 is the one the
page shows) and verifies the ledger in the page. (Each owner's node adopts the vote signed in the page at
its first task, checking the org's signature.) Then a steward of an org outside the project sees neither
the owner's private dataset nor the unreleased model, and their URLs answer 404."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from consortium.launch import HubProcess, Process, start_hub, start_node
from consortium.node import actions
from consortium.scenario import DIGITS_HYPERPARAMETERS, ORGS, DigitsConsortium, digits_split, provision_digits

pytestmark = pytest.mark.e2e
OWNERS = ORGS[:2]
OUTSIDER = ORGS[2]
ROUNDS = 3
PRIVATE = "private-notes"
RESEARCHER = "story-researcher"


@dataclass
class Story:
    hub: HubProcess
    consortium: DigitsConsortium
    tokens: dict[str, str]
    nodes: list[Process] = field(default_factory=list)

    def start_owner_nodes(self) -> None:
        """The owners' nodes come online (the run page is open before they do, so it sees every round
        arrive)."""
        self.nodes.extend(start_node(self.hub.url, self.consortium.org_dirs[org], poll_wait=5.0) for org in OWNERS)


def write_private_csv(path: Path) -> Path:
    """A small table of digits, for the first owner's private dataset."""
    x, _, y, _ = digits_split()
    frame = pd.DataFrame(x[:80], columns=[f"p{i}" for i in range(x.shape[1])]).astype("float64")
    frame["label"] = y[:80]
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def story(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """Three orgs with their digits, the first also with a private dataset; a researcher of the first org and a
    steward of each org. Nothing proposed yet and no node online: the run starts them."""
    workdir = tmp_path_factory.mktemp("story")
    hub = start_hub(workdir / "hub")
    story = None
    try:
        consortium = provision_digits(hub, workdir, ORGS)
        loaded, card = actions.prepare_dataset(
            write_private_csv(workdir / "data" / "private.csv"), PRIVATE, "CC-BY-4.0", target="label",
            description="kept to its owner", visibility="private")
        with consortium.org_client(OWNERS[0]) as client:
            actions.register_dataset(client, consortium.org_dirs[OWNERS[0]], loaded, card)
        with hub.client() as admin:
            tokens = {org: admin.create_user(f"steward-{org}", "steward", org)["token"] for org in ORGS}
            tokens[RESEARCHER] = admin.create_user(RESEARCHER, "researcher", OWNERS[0])["token"]
        story = Story(hub, consortium, tokens)
        yield story
    finally:
        for node in story.nodes if story else ():
            node.stop()
        hub.stop()


def log_in(browser, story: Story, who: str):
    """A fresh browser context logged in as ``who`` (its own cookie jar), and its page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(story.hub.url + "/login")
    page.get_by_label("API token").fill(story.tokens[who])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(story.hub.url + "/")
    return context, page


def browse_and_propose(page, story: Story) -> int:
    """The researcher finds the owners' digits in the catalogue, opens a card and proposes the project; its
    id."""
    url = story.hub.url
    page.goto(url + "/catalogue")
    catalogue = page.locator("main").inner_text()
    assert all(f"{org}/digits" in catalogue for org in ORGS), catalogue
    page.get_by_role("link", name=f"{OWNERS[1]}/digits").click()
    page.wait_for_url(f"{url}/datasets/{OWNERS[1]}/digits")
    card = page.locator("main").inner_text()
    assert f"{OWNERS[1]}'s share of the handwritten digits" in card and "CC-BY-4.0" in card
    page.goto(url + "/projects/new")
    page.get_by_label("Name").fill("story-digits")
    page.get_by_label("Task").fill("Classify handwritten digits across two organisations")
    page.get_by_label("Datasets").fill(", ".join(f"{org}/digits" for org in OWNERS))
    page.get_by_label("Algorithm").fill("classifier")
    page.get_by_label("Hyper-parameters (JSON object)").fill(json.dumps(DIGITS_HYPERPARAMETERS))
    page.get_by_label("Strategy").fill("fedavg")
    page.get_by_label("Rounds").fill(str(ROUNDS))
    page.get_by_label("Fewest nodes per round").fill("2")
    page.get_by_label("Round timeout (s)").fill("60")
    page.get_by_role("button", name="Propose").click()
    page.wait_for_url(re.compile(r".*/projects/\d+$"))
    project_id = int(page.url.rsplit("/", 1)[1])
    main = page.locator("main").inner_text()
    assert "Classify handwritten digits across two organisations" in main and RESEARCHER in main
    return project_id


def vote_in_page(browser, story: Story, org: str, project_id: int) -> int:
    """``org``'s steward opens the project's proposal from its page and votes yes, signing with the org's key
    file."""
    context, page = log_in(browser, story, org)
    try:
        page.goto(f"{story.hub.url}/projects/{project_id}")
        page.get_by_role("link", name=re.compile(r"^proposal \d+$")).click()
        page.wait_for_url(re.compile(r".*/proposals/\d+$"))
        proposal_id = int(page.url.rsplit("/", 1)[1])
        page.get_by_role("radio", name="yes").check()
        page.get_by_label("Reason (optional)").fill(f"{org} agrees")
        page.get_by_label("Organisation key file (org.key)").set_input_files(
            str(story.consortium.org_dirs[org] / "org.key"))
        page.get_by_role("button", name="Sign and vote").click()
        page.wait_for_url(f"{story.hub.url}/proposals/{proposal_id}?voted=1")
        assert page.get_by_role("status").inner_text() == "Your organisation's signed vote was recorded."
        row = page.locator("main table tbody tr", has_text=org)
        assert row.locator("td").nth(3).inner_text() == "verified"
    finally:
        context.close()
    return proposal_id


def run_and_watch(page, story: Story, project_id: int) -> int:
    """The researcher starts the run, the owners' nodes come online, and the page follows the curve, without
    reloading, from no point to the last round; the model's id."""
    from playwright.sync_api import expect

    page.goto(f"{story.hub.url}/projects/{project_id}")
    assert page.locator("main dl.facts").first.locator("dt:has-text('Status') + dd").inner_text() == "approved"
    page.get_by_role("button", name="Start a run").click()
    page.wait_for_url(f"{story.hub.url}/runs/*")
    page.evaluate("window.notReloaded = true")
    assert page.locator("#rounds-table tr[data-round]").count() == 0
    story.start_owner_nodes()
    seen = []
    for number in range(1, ROUNDS + 1):
        page.locator(f'#rounds-table tr[data-round="{number}"]').wait_for(timeout=120_000)
        points = page.locator('figure[data-key="test.accuracy"] polyline').get_attribute("points")
        seen.append(len(points.split()))
    expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
    assert page.evaluate("window.notReloaded === true"), "the page reloaded"
    assert seen == sorted(seen) and seen[-1] == ROUNDS, seen
    model = page.locator("#run-model a")
    expect(model).to_have_text(re.compile(r"^Model \d+$"), timeout=30_000)
    model.click()
    page.wait_for_url(re.compile(r".*/models/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def check_model_and_download(page, tmp_path: Path, project_id: int) -> None:
    """The model page's lineage and licence, and weights whose hash is the one it shows."""
    facts = page.locator("main dl.facts").first
    assert facts.locator("dt", has_text="Licence").count() == 1
    licence = facts.locator("dt:has-text('Licence') + dd").inner_text()
    assert licence == "CC-BY-4.0", licence
    assert "trained" in facts.locator("dt:has-text('Status') + dd").inner_text()
    lineage = page.locator('svg[aria-labelledby="lineage"]')
    assert lineage.count() == 1
    titles = " ".join(lineage.locator("title").all_text_contents())
    assert all(f"{org}/digits" in titles for org in OWNERS), titles
    assert page.locator(f'svg[aria-labelledby="lineage"] a[href="/projects/{project_id}"]').count() >= 1
    sha = facts.locator("dt:has-text('Weights SHA-256') + dd").inner_text().strip()
    with page.expect_download() as started:
        page.get_by_role("link", name="Weights (safetensors)").click()
    saved = tmp_path / "weights.safetensors"
    started.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == sha


def verify_ledger_in_page(page, story: Story) -> None:
    from playwright.sync_api import expect

    page.goto(story.hub.url + "/ledger")
    page.get_by_role("button", name="Verify the ledger").click()
    result = page.locator("#verify-result")
    expect(result).to_have_attribute("data-state", re.compile("^(ok|bad|error)$"), timeout=60_000)
    assert result.get_attribute("data-state") == "ok", result.inner_text()
    assert int(result.get_attribute("data-checked")) > 10


def check_the_outsider_sees_nothing_hidden(browser, story: Story, model_id: int) -> None:
    url = story.hub.url
    context, page = log_in(browser, story, OUTSIDER)
    try:
        page.goto(url + "/catalogue")
        catalogue = page.locator("main").inner_text()
        assert f"{OWNERS[0]}/digits" in catalogue and PRIVATE not in catalogue, catalogue
        page.goto(url + "/models")
        assert f"/models/{model_id}" not in page.content()
        for path in (f"/datasets/{OWNERS[0]}/{PRIVATE}", f"/models/{model_id}", f"/models/{model_id}/weights"):
            response = page.goto(url + path)
            assert response.status == 404, (path, response.status)
    finally:
        context.close()


def test_the_whole_story_in_the_browser(browser, story: Story, tmp_path: Path) -> None:
    context, page = log_in(browser, story, RESEARCHER)
    problems: list[str] = []
    page.on("response", lambda response: problems.append(f"{response.status} {response.url}")
            if response.status >= 400 else None)
    try:
        project_id = browse_and_propose(page, story)
        with story.hub.client() as admin:  # as the propose page says: the test set goes by the API
            admin.put_test_set(project_id, story.consortium.test_set_bytes())
        for org in OWNERS:
            vote_in_page(browser, story, org, project_id)
        model_id = run_and_watch(page, story, project_id)
        check_model_and_download(page, tmp_path, project_id)
        verify_ledger_in_page(page, story)
    finally:
        context.close()
    assert not problems, problems
    check_the_outsider_sees_nothing_hidden(browser, story, model_id)
