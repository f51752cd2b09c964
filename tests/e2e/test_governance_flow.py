"""Membership decided by the members, end to end: a real hub process, the three digits orgs and a fourth org
with its own key. The fourth is proposed and admitted by the votes of the three (one no, two yes: a strict
majority, with half of them voting, under the default policy); once it holds data in an open project, a
suspension passes, after which its signed requests are refused and the open proposals that use its data are
withdrawn, naming why. Bad input is refused with a 4xx and changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from consortium.client import HubClient, HubError
from consortium.crypto import generate_org_key, load_org_identity, verify_signature
from consortium.governance import statements
from consortium.governance.wire import ProposalCreate, VoteIn
from consortium.node import actions
from consortium.protocol import EnrolRequest
from consortium.scenario import ORGS, digits_spec, vote_as

pytestmark = pytest.mark.e2e
NORTH, SOUTH, EAST = ORGS
WEST = "west-hospital"
JSON = {"Content-Type": "application/json"}


def expect(status: int, fragment: str, fn, *args, **kwargs) -> HubError:
    with pytest.raises(HubError) as info:
        fn(*args, **kwargs)
    assert info.value.status_code == status and fragment in info.value.detail, (
        info.value.status_code, info.value.detail)
    return info.value


def vote_body(identity, proposal: dict, hub_id: str, choice: str = "yes", *, org: str | None = None,
              content_hash: str | None = None) -> VoteIn:
    """A vote signed by ``identity`` (as ``org``, default its own) over ``content_hash`` (default the
    proposal's)."""
    digest = content_hash or proposal["content_hash"]
    statement = statements.vote_statement(hub_id=hub_id, proposal_id=proposal["id"], content_hash=digest,
                                          org=org or identity.org, choice=choice)
    signature = identity.sign(statements.vote_message(statement))
    return VoteIn(choice=choice, content_hash=digest, signature=signature)


def register_share(cluster, west_dir: Path) -> None:
    """Half of east's digits as the fourth org's ``digits`` dataset (another file, another hash)."""
    frame = pd.read_csv(cluster.workdir / "data" / f"{EAST}.csv")
    path = cluster.workdir / "data" / f"{WEST}.csv"
    frame.iloc[: len(frame) // 2].to_csv(path, index=False)
    loaded, card = actions.prepare_dataset(path, "digits", "CC-BY-4.0", target="label")
    with HubClient(cluster.hub.url, identity=load_org_identity(west_dir)) as client:
        actions.register_dataset(client, west_dir, loaded, card)


def refused_within(client: HubClient, seconds: float) -> HubError:
    """The first refusal of the org's signed requests (the hub caches admitted keys for a few seconds)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.datasets()
        except HubError as exc:
            return exc
        assert time.monotonic() < deadline, "the suspended org's signed requests are still served"
        time.sleep(0.5)


def status_of(admin: HubClient, org: str) -> str:
    return next(o["status"] for o in admin.orgs() if o["name"] == org)


def test_a_fourth_org_is_admitted_by_vote_and_a_suspension_takes_its_data_out(cluster) -> None:
    consortium, hub = cluster.consortium, cluster.hub
    dirs = consortium.org_dirs
    west_dir = cluster.workdir / "orgs" / WEST
    west = generate_org_key(west_dir, WEST)
    with hub.client() as admin:
        health = admin.health()
        hub_id, hub_key = health["hub_id"], health["hub_key"]
        assert admin.create_org(WEST)["status"] == "proposed"
        token = admin.enrolment_token(WEST)
        with HubClient(hub.url) as anonymous:
            anonymous.enrol(EnrolRequest(org=WEST, token=token, public_key=west.public_key_b64))
        [admission] = admin.proposals(status="open", kind="admit_org")
    assert admission["subject"] == {"org": WEST}
    assert (admission["electorate"], admission["veto_holders"]) == (sorted(ORGS), [])
    assert admission["proposer"] == "user:admin" and admission["missing"] == []
    west_client = HubClient(hub.url, identity=west)
    try:
        # A proposed org holds a key but is no member yet: its signed requests are refused.
        expect(401, "", west_client.datasets)

        # Bad input: a 4xx each, and nothing changes (no ledger entry, no vote, no proposal).
        with hub.client() as admin, consortium.org_client(NORTH) as north:
            head = admin.ledger_head()
            proposals_before = admin.proposals()
            for body, status, fragment in [
                (b'{"kind": "admit_everyone", "reason": "x"}', 422, "kind"),
                (b'{"kind": "suspend_org", "org": "east-institute", "reason": "x", "x": 1}', 422, "body.x"),
                (b'{"kind": "suspend_org", "reason": "which one?"}', 422, "names the organisation"),
                (b'{"kind": "suspend_org", "org": "east-institute", "reason": "   "}', 422, "reason"),
                (b'{"kind": "suspend_org", "org": "west-hospital", "reason": "x"}', 409, "is proposed"),
                (b'{"kind": "run_project", "reason": "x"}', 422, "POST /api/projects"),
                (b'{"kind": ', 422, ""),
            ]:
                expect(status, fragment, north.request, "POST", "/api/proposals", content=body, headers=JSON)
            north_key = load_org_identity(dirs[NORTH])
            missing = dict(admission, id=2**31 - 1)
            expect(404, f"no proposal {missing['id']}", north.vote, missing["id"],
                   vote_body(north_key, missing, hub_id))
            expect(422, "proposal_id", north.request, "POST", "/api/proposals/0/votes",
                   json=vote_body(north_key, admission, hub_id).model_dump())
            # south's vote in north's name, signed with south's key; north's vote over another content hash
            forged = vote_body(load_org_identity(dirs[SOUTH]), admission, hub_id, org=NORTH)
            expect(422, "signature", north.vote, admission["id"], forged)
            expect(422, "content_hash", north.vote, admission["id"],
                   vote_body(north_key, admission, hub_id, content_hash="0" * 64))
            expect(422, "choice", north.request, "POST", f"/api/proposals/{admission['id']}/votes",
                   json=vote_body(north_key, admission, hub_id).model_dump() | {"choice": "maybe"})
            # the applicant does not vote on its own admission (it holds no veto under the default policy)
            expect(401, "", west_client.vote, admission["id"], vote_body(west, admission, hub_id))
            assert admin.ledger_head() == head
            assert admin.proposals() == proposals_before

        # One no and two yes: passed, once the no could no longer change the outcome.
        vote_as(dirs[EAST], hub.url, admission["id"], "no", "we have not seen their data protection plan")
        vote_as(dirs[NORTH], hub.url, admission["id"], "yes")
        with hub.client() as admin:
            still = admin.proposal(admission["id"])
            assert still["status"] == "open", "1 yes, 1 no and a vote to come: a tie is possible"
            assert status_of(admin, WEST) == "proposed"
        vote_as(dirs[SOUTH], hub.url, admission["id"], "yes")
        with hub.client() as admin:
            passed = admin.proposal(admission["id"])
            assert status_of(admin, WEST) == "admitted"
            entries = admin.ledger(limit=10_000)
        assert passed["status"] == "passed"
        assert passed["outcome"]["votes"] == {EAST: "no", NORTH: "yes", SOUTH: "yes"}
        assert verify_signature(hub_key, statements.outcome_message(passed["outcome"]),
                                passed["outcome_signature"])
        assert [v["reason"] for v in passed["votes"] if v["org"] == EAST] == [
            "we have not seen their data protection plan"]
        about = [e for e in entries if e["payload"].get("proposal_id") == admission["id"]
                 or e["payload"].get("org") == WEST]
        assert [e["event_type"] for e in about] == [
            "org.proposed", "proposal.opened", "org.enrolment_token_issued", "node.enrolled",
            "proposal.voted", "proposal.voted", "proposal.voted", "proposal.decided", "org.admitted",
        ], [e["event_type"] for e in about]
        with consortium.org_client(EAST) as east:
            expect(409, f"proposal {admission['id']} is passed: it takes no more votes", east.vote,
                   admission["id"], vote_body(load_org_identity(dirs[EAST]), admission, hub_id))

        # A member now: it registers data, and a project on it waits for its yes.
        register_share(cluster, west_dir)
        with hub.client() as admin:
            project = admin.create_project(digits_spec("e2e-with-west", [NORTH, WEST], rounds=1))
            run_vote = admin.proposal(project["proposal_id"])
        assert run_vote["electorate"] == sorted([NORTH, WEST])
        assert run_vote["advisory"] == sorted([EAST, SOUTH]), "members asked, their votes not counted"
        vote_as(dirs[NORTH], hub.url, run_vote["id"], "yes")
        assert west_client.proposal(run_vote["id"])["missing"] == [WEST]

        # The suspension: proposed by a member, west cannot vote on it, two of three say yes.
        with consortium.org_client(NORTH) as north:
            suspension = north.create_proposal(ProposalCreate(
                kind="suspend_org", org=WEST, reason="shared a member's card outside the consortium"))
        assert (suspension["status"], suspension["electorate"]) == ("open", sorted(ORGS))
        expect(403, f"{WEST} does not vote on a proposal about itself", west_client.vote, suspension["id"],
               vote_body(west, suspension, hub_id))
        vote_as(dirs[NORTH], hub.url, suspension["id"], "yes")
        with hub.client() as admin:
            assert admin.proposal(suspension["id"])["status"] == "open"
        vote_as(dirs[SOUTH], hub.url, suspension["id"], "yes")
        with hub.client() as admin:
            assert admin.proposal(suspension["id"])["status"] == "passed"
            assert status_of(admin, WEST) == "suspended"
            withdrawn = admin.proposal(run_vote["id"])
            expect(409, f"proposal {run_vote['id']} is withdrawn", admin.start_run, project["id"])
            entries = admin.ledger(limit=10_000)
        why = f"{WEST} was suspended (proposal {suspension['id']}): its data can no longer be used"
        assert (withdrawn["status"], withdrawn["reason"]) == ("withdrawn", why)
        assert {"event_type": "proposal.withdrawn", "actor": "hub", "reason": why} in [
            {"event_type": e["event_type"], "actor": e["actor"], "reason": e["payload"].get("reason")}
            for e in entries if e["payload"].get("proposal_id") == run_vote["id"]]
        assert any(e["event_type"] == "org.suspended" and e["payload"] == {"org": WEST,
                   "proposal_id": suspension["id"]} for e in entries)

        refusal = refused_within(west_client, 15.0)
        assert refusal.status_code in (401, 403), refusal.detail
        expect(refusal.status_code, "", west_client.vote, run_vote["id"], vote_body(west, run_vote, hub_id))
        expect(refusal.status_code, "", west_client.create_proposal,
               ProposalCreate(kind="suspend_org", org=NORTH, reason="retaliation"))
        with hub.client() as admin:
            assert admin.proposal(run_vote["id"])["votes"] == withdrawn["votes"]
            assert admin.proposals(status="open") == []
    finally:
        west_client.close()


def test_a_suspended_orgs_steward_can_no_longer_act_for_it(cluster) -> None:
    dirs = cluster.consortium.org_dirs
    with cluster.hub.client() as admin:
        steward = admin.create_user(f"{EAST}-steward", "steward", EAST)["token"]
        suspension = admin.create_proposal(ProposalCreate(kind="suspend_org", org=EAST, reason="audit"))
    for org in (NORTH, SOUTH):
        vote_as(dirs[org], cluster.hub.url, suspension["id"], "yes")
    with cluster.hub.client() as admin:
        assert status_of(admin, EAST) == "suspended"
        head = admin.ledger_head()
    with HubClient(cluster.hub.url, token=steward) as client:
        expect(401, "is suspended", client.create_proposal,
               ProposalCreate(kind="suspend_org", org=NORTH, reason="spite"))
    with cluster.hub.client() as admin:
        assert admin.ledger_head() == head


def test_provision_org_admits_a_fourth_org_with_every_member_voting(cluster) -> None:
    from consortium.launch import provision_org

    with cluster.hub.client() as admin:
        provision_org(admin, cluster.hub.url, cluster.workdir / "orgs" / WEST, WEST,
                      voters=cluster.consortium.org_dirs)
        assert status_of(admin, WEST) == "admitted"
