"""Contribution valuation in a real run: a hub and three node processes, GTG-Shapley after every round off the
round's critical path; the card's totals equal the sum of the signed round.valued ledger entries, and a passed
release pays the policy's pool to the contributors by those values, as credits in the ledger."""

from __future__ import annotations

import math

import pytest

from consortium.scenario import ORGS, digits_spec, propose_and_approve, release_by_vote, trained_model

pytestmark = pytest.mark.e2e
ROUNDS = 3


def test_a_valued_run_puts_contributions_on_the_card_the_ledger_and_the_release_credits(cluster) -> None:
    consortium, hub = cluster.consortium, cluster.hub
    cluster.start_nodes(ORGS)
    spec = digits_spec("valued", list(ORGS), rounds=ROUNDS, valuation={"method": "gtg-shapley"})
    project = propose_and_approve(consortium, spec)
    with hub.client() as admin:
        model_id = trained_model(admin, project["id"])
        card = admin.model(model_id)["card"]
        entries = [e for e in admin.ledger(limit=10_000) if e["event_type"] == "round.valued"]
        balances_before = {row["org"]: row["balance"] for row in admin.credit_balances()}
        progress = admin.progress(card["run_id"])

    contributions = card["contributions"]
    assert contributions["method"] == "gtg-shapley" and contributions["metric"] == "loss"
    assert contributions["rounds_valued"] == list(range(1, ROUNDS + 1)) and contributions["rounds_not_valued"] == []
    assert sorted(e["payload"]["round"] for e in entries) == list(range(1, ROUNDS + 1))
    for org in ORGS:
        from_ledger = sum(v for e in entries for ref, v in e["payload"]["values"].items() if ref.startswith(f"{org}/"))
        assert math.isclose(contributions["values"][org], from_ledger, rel_tol=1e-12, abs_tol=1e-12)
    assert progress.contributions == contributions["values"]
    total_gain = sum(contributions["values"].values())
    assert total_gain > 0, contributions  # the rounds lowered the test loss
    assert "## Contributions" in card_markdown(hub, model_id)

    assert release_by_vote(consortium, model_id, "CC-BY-4.0", ORGS)["status"] == "passed"
    with hub.client() as admin:
        assert admin.model(model_id)["status"] == "released"
        paid = {row["org"]: row["balance"] - balances_before[row["org"]] for row in admin.credit_balances()}
        history = {org: admin.credit_account(org)["history"] for org in ORGS}
    positive = {org for org, value in contributions["values"].items() if value > 0}
    assert sum(paid[org] for org in ORGS) == 100 and {org for org in ORGS if paid[org] > 0} <= positive
    for org in positive:
        assert [m["reference"] for m in history[org] if m["reason"] == "contribution"] == [f"model:{model_id}"]


def card_markdown(hub, model_id: int) -> str:
    with hub.client() as admin:
        return admin.model_card_markdown(model_id)
