"""The ledger explorer's in-page verifier and the browser-signed vote, in a real Chromium against a real hub
with real nodes (which cosign checkpoints): the page's WebCrypto audit agrees with the Python verifier on the
same ledger for a reader who sees every payload and for one who gets redacted entries; an entry tampered
with in the database is named by both; a steward votes with the org's key file and the proposal shows the
vote verified; another org's key is refused with a message and nothing is recorded."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from consortium.client import HubClient
from consortium.launch import HubProcess, start_hub, start_node
from consortium.ledger_audit import verify_from_db, verify_from_hub
from consortium.scenario import DIGITS_HYPERPARAMETERS, ORGS, DigitsConsortium, digits_spec, propose_and_approve, provision_digits

pytestmark = pytest.mark.e2e
OWNERS = ORGS[:2]
OUTSIDER = ORGS[2]


@dataclass
class World:
    hub: HubProcess
    consortium: DigitsConsortium
    tokens: dict[str, str]
    open_proposal: int

    @property
    def db(self) -> Path:
        return self.hub.data_dir / "hub.db"


@pytest.fixture(scope="module")
def world(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Three orgs; a project of the first two approved by their signed votes, a second one whose proposal is
    still open; the owners' nodes ran until a checkpoint had both their cosignatures, then stopped (so the
    ledger holds still while the tests compare verifiers)."""
    workdir = tmp_path_factory.mktemp("ledger-browser")
    hub = start_hub(workdir / "hub", extra_args=("--checkpoint-interval", "0.3"))
    nodes = []
    try:
        consortium = provision_digits(hub, workdir, ORGS)
        with hub.client() as admin:
            tokens = {org: admin.create_user(f"steward-{org}", "steward", org)["token"] for org in ORGS}
        propose_and_approve(consortium, digits_spec("approved-digits", OWNERS, rounds=1))
        with hub.client() as admin:
            pending = admin.create_project(digits_spec("pending-digits", OWNERS, rounds=1))
            admin.put_test_set(pending["id"], consortium.test_set_bytes())
            pending = admin.project(pending["id"])
        nodes = [start_node(hub.url, consortium.org_dirs[org], poll_wait=1.0) for org in OWNERS]
        with hub.client() as admin:
            for _ in range(150):
                cosigners = {c["org"] for cp in admin.checkpoints() for c in cp["cosignatures"]}
                if cosigners >= set(OWNERS):
                    break
                time.sleep(0.2)
            assert cosigners >= set(OWNERS), hub.log_tail(40)
        for node in nodes:
            node.stop()
        nodes = []
        time.sleep(1.0)  # the checkpointer signs what the nodes' last requests wrote
        yield World(hub, consortium, tokens, pending["proposal_id"])
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


def verify_in_page(page, world: World) -> dict[str, str]:
    page.goto(world.hub.url + "/ledger")
    result = page.locator("#verify-result")
    page.get_by_role("button", name="Verify the ledger").click()
    expect(result).to_have_attribute("data-state", re.compile("^(ok|bad|error)$"), timeout=60_000)
    return {**page.evaluate("Object.assign({}, document.getElementById('verify-result').dataset)"),
            "text": result.inner_text()}


def python_report(world: World, org: str):
    with HubClient(world.hub.url, token=world.tokens[org]) as client:
        return verify_from_hub(client)


@pytest.mark.parametrize("org", [OWNERS[0], OUTSIDER])
def test_the_pages_verifier_agrees_with_the_python_verifier(page, world: World, org: str) -> None:
    log_in(page, world, org)
    expected = python_report(world, org)
    found = verify_in_page(page, world)
    assert expected.ok, expected.reason
    assert found["state"] == "ok", found["text"]
    assert int(found["checked"]) == expected.checked
    assert found["root"] == expected.root
    assert found["headHash"] == expected.head_hash
    assert int(found["checkpoints"]) == expected.checkpoints >= 1
    with HubClient(world.hub.url, token=world.tokens[org]) as client:
        redacted = [e for e in client.ledger(limit=10_000) if e["payload"] is None]
    assert bool(redacted) == (org == OUTSIDER)  # the outsider's audit went through redacted entries


def test_an_entry_tampered_with_in_the_database_is_named_by_the_page_and_by_python(page, world: World) -> None:
    log_in(page, world, OWNERS[0])
    with sqlite3.connect(world.db) as db:
        seq, payload = db.execute(
            "SELECT seq, payload FROM ledger_entries WHERE event_type = 'proposal.voted' ORDER BY seq LIMIT 1"
        ).fetchone()
        forged = {**json.loads(payload), "choice": "no"}
        db.execute("UPDATE ledger_entries SET payload = ? WHERE seq = ?", (json.dumps(forged), seq))
    try:
        expected = verify_from_db(f"sqlite:///{world.db}")
        found = verify_in_page(page, world)
    finally:
        with sqlite3.connect(world.db) as db:
            db.execute("UPDATE ledger_entries SET payload = ? WHERE seq = ?", (payload, seq))
    assert expected.first_bad_seq == seq
    assert found["state"] == "bad"
    assert int(found["firstBad"]) == seq
    assert found["text"].startswith(f"Entry {seq} is bad: payload of entry {seq} does not match its commitment")
    assert int(found["checked"]) == expected.checked == seq - 1


def test_the_inclusion_proof_of_an_entry_checks_in_the_page(page, world: World) -> None:
    log_in(page, world, OUTSIDER)
    page.goto(world.hub.url + "/ledger/3")
    page.get_by_role("button", name="Check the proof in this browser").click()
    expect(page.locator("#inclusion-result")).to_have_attribute("data-state", "ok")
    page.goto(world.hub.url + "/ledger/checkpoints")
    assert all(org in page.locator("main").inner_text() for org in OWNERS)


def vote_form(page, world: World, key_file: Path) -> None:
    page.goto(f"{world.hub.url}/proposals/{world.open_proposal}")
    page.get_by_role("radio", name="no").check()
    page.get_by_label("Reason (optional)").fill('needs "more" rounds <b>ü</b> 😀')
    page.get_by_label("Organisation key file (org.key)").set_input_files(str(key_file))
    page.get_by_role("button", name="Sign and vote").click()


def test_a_wrong_key_is_refused_and_nothing_is_recorded(page, world: World) -> None:
    voter = OWNERS[1]
    log_in(page, world, voter)
    vote_form(page, world, world.consortium.org_dirs[OUTSIDER] / "org.key")
    problem = page.locator("#vote-key-error")
    problem.wait_for(state="visible")
    assert problem.inner_text().startswith(f"This is not {voter}'s current key")
    page.get_by_label("Organisation key file (org.key)").set_input_files({
        "name": "org.key", "mimeType": "text/plain", "buffer": b"not a key"})
    page.get_by_role("button", name="Sign and vote").click()
    expect(problem).to_contain_text("not an organisation key")
    with world.hub.client() as admin:
        assert admin.proposal(world.open_proposal)["votes"] == []


def test_a_steward_votes_with_the_org_key_file_and_the_vote_verifies(page, world: World) -> None:
    voter = OWNERS[0]
    log_in(page, world, voter)
    vote_form(page, world, world.consortium.org_dirs[voter] / "org.key")
    page.wait_for_url(f"{world.hub.url}/proposals/{world.open_proposal}?voted=1")
    assert page.get_by_role("status").inner_text() == "Your organisation's signed vote was recorded."
    row = page.locator("main table tbody tr", has_text=voter)
    assert row.locator("td").nth(3).inner_text() == "verified"
    assert page.locator("main table tbody tr").count() == 1
    with world.hub.client() as admin:
        votes = admin.proposal(world.open_proposal)["votes"]
        entries = admin.ledger(limit=10_000)
    assert [(v["org"], v["choice"], v["reason"]) for v in votes] == [(voter, "no", 'needs "more" rounds <b>ü</b> 😀')]
    recorded = [e for e in entries if e["event_type"] == "proposal.voted"]
    assert recorded[-1]["actor_signature"] == votes[0]["signature"]
    assert verify_from_db(f"sqlite:///{world.db}").ok
    assert verify_in_page(page, world)["state"] == "ok"


def test_markup_typed_into_the_forms_is_shown_as_text_and_never_runs(page, world: World) -> None:
    """Runs last: it proposes a project, so the ledger grows."""
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    markup = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    log_in(page, world, OWNERS[0])
    page.goto(world.hub.url + "/ledger")
    page.get_by_label("Actor").fill(markup)
    page.get_by_role("button", name="Filter").click()
    assert "at most 100 letters" in page.locator("#f-actor-error").inner_text()
    assert page.get_by_label("Actor").input_value() == markup
    page.goto(world.hub.url + "/projects/new")
    page.get_by_label("Name").fill("marked-up")
    page.get_by_label("Task").fill(markup)
    page.get_by_label("Datasets").fill(", ".join(f"{org}/digits" for org in OWNERS))
    page.get_by_label("Hyper-parameters (JSON object)").fill(json.dumps(DIGITS_HYPERPARAMETERS))
    page.get_by_label("Rounds").fill("1")
    page.get_by_role("button", name="Propose").click()
    page.wait_for_url(re.compile(r".*/projects/\d+$"))
    assert markup in page.locator("main").inner_text()
    page.goto(world.hub.url + "/projects")
    assert page.locator('img[src="x"]').count() == 0 and page.locator("main script").count() == 0
    assert dialogs == []
