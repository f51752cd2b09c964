"""What can go wrong in a SecAgg round: an abort below the threshold, or one bad message.

A bad message raises a :class:`MessageError` subclass that names the problem; the receiver's state is left as
it was, so the round goes on with the other clients (the sender counts as dropped unless it later sends a valid
message). Too few clients at a stage raise :class:`SecAggAborted`, after which the server holds nothing it
could unmask.
"""

from __future__ import annotations


class SecAggError(ValueError):
    """Base of every SecAgg error."""


class SecAggAborted(SecAggError):
    """The round stopped at ``stage`` because only ``survivors`` clients remained for a threshold of
    ``threshold``; nothing was revealed."""

    def __init__(self, stage: str, survivors: int, threshold: int, detail: str = "") -> None:
        self.stage, self.survivors, self.threshold = stage, survivors, threshold
        text = f"secure aggregation aborted at stage {stage!r}: {survivors} clients remain, threshold {threshold}"
        super().__init__(text + (f" ({detail})" if detail else ""))


class MessageError(SecAggError):
    """One message was refused; ``problem`` is a stable code, the text says what was wrong."""

    problem = "malformed"

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.problem}: {detail}")
        self.detail = detail


class MalformedMessage(MessageError):
    problem = "malformed"


class WrongRound(MessageError):
    problem = "wrong_round"


class WrongStage(MessageError):
    problem = "wrong_stage"


class ReplayedMessage(MessageError):
    problem = "replayed"


class UnknownSender(MessageError):
    problem = "unknown_sender"


class BadKeys(MessageError):
    problem = "bad_keys"


class BadShare(MessageError):
    problem = "bad_share"


class BadVector(MessageError):
    problem = "bad_vector"
