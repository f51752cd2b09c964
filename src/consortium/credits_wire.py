"""Wire schemas of credit accounts: balances and the movements behind them (each one a ledger entry)."""

from __future__ import annotations

from datetime import datetime

from consortium.protocol import Wire


class CreditMovementOut(Wire):
    """One earn (positive ``amount``) or spend (negative), with the ledger entry that records it."""

    amount: int
    reason: str
    reference: str
    ledger_seq: int
    created_at: datetime


class CreditAccountOut(Wire):
    """An org's balance and its newest movements (``history``, newest first; page back with ``before``)."""

    org: str
    balance: int
    history: list[CreditMovementOut]


class CreditBalanceOut(Wire):
    org: str
    balance: int
