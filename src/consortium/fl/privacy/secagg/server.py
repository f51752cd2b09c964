"""The server side of a SecAgg+ round: it relays keys and sealed shares, collects masked vectors and unmasks
their sum, learning nothing else (honest-but-curious; see docs/privacy.md).

Survivor sets per stage, as in Bonawitz et al.: ``U1`` advertised keys, ``U2`` shared keys, ``U3`` sent a
masked input, ``U4`` answered the unmask request. Each ``close_*`` method ends a stage (when all expected
messages are in, or when the caller's stage timeout fires) and raises :class:`~.errors.SecAggAborted` if fewer
than ``threshold`` clients are left. The sum covers ``U3``: the masks of clients in ``U2 - U3`` are removed with
their reconstructed mask keys, the self masks of ``U3`` with their reconstructed seeds.

:meth:`SecAggServer.receive` checks a message completely before storing anything, so a bad or replayed message
raises a :class:`~.errors.MessageError` and the round goes on. Every received message, accepted or not, is kept
in :attr:`SecAggServer.transcript` (what an audit, or the abort test, can scan).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from consortium.fl.privacy.secagg import masks, shamir
from consortium.fl.privacy.secagg.client import MASK_KEY, SELF_MASK
from consortium.fl.privacy.secagg.errors import (
    BadKeys,
    BadShare,
    BadVector,
    ReplayedMessage,
    SecAggAborted,
    UnknownSender,
    WrongRound,
    WrongStage,
)
from consortium.fl.privacy.secagg.graph import neighbours
from consortium.fl.privacy.secagg.messages import (
    AdvertiseKeys,
    ForwardedShares,
    KeyDirectory,
    MaskedInput,
    SecAggConfig,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
    unb64,
)

Message = AdvertiseKeys | ShareKeys | MaskedInput | UnmaskShares
STAGES = ("advertise_keys", "share_keys", "masked_input", "unmask")


class SecAggServer:
    """The server's state in one round."""

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self.graph = neighbours(config.clients, config.degree, config.graph_seed)
        self.stage = STAGES[0]
        self.transcript: list[Message] = []
        self.keys: dict[str, AdvertiseKeys] = {}
        self.shares: dict[str, ShareKeys] = {}
        self.masked: dict[str, np.ndarray] = {}
        self.revealed: dict[str, UnmaskShares] = {}
        self.survivors: tuple[str, ...] = ()
        self.dropped: tuple[str, ...] = ()
        self._probe = masks.X25519PrivateKey.generate()

    # ---------------------------------------------------------------------------------------------- receive

    def receive(self, message: Message) -> None:
        """Check and store one client message of the current stage; MessageError (state unchanged) if bad."""
        self.transcript.append(message)
        if message.round != self.config.round:
            raise WrongRound(f"a message of round {message.round} reached round {self.config.round}")
        if message.sender not in self.config.clients:
            raise UnknownSender(f"{message.sender!r} is not a client of this round")
        if message.stage != self.stage:
            raise WrongStage(f"a {message.stage!r} message from {message.sender!r} during stage {self.stage!r}")
        store = {"advertise_keys": self.keys, "share_keys": self.shares, "masked_input": self.masked,
                 "unmask": self.revealed}[self.stage]
        if message.sender in store:
            raise ReplayedMessage(f"{message.sender!r} already sent its {self.stage!r} message")
        eligible = self._eligible()
        if eligible is not None and message.sender not in eligible:
            raise UnknownSender(f"{message.sender!r} did not take part in the previous stage")
        if isinstance(message, AdvertiseKeys):
            self._check_keys(message)
            self.keys[message.sender] = message
        elif isinstance(message, ShareKeys):
            self._check_share_keys(message)
            self.shares[message.sender] = message
        elif isinstance(message, MaskedInput):
            self.masked[message.sender] = self._check_vector(message)
        else:
            self._check_unmask(message)
            self.revealed[message.sender] = message

    def _eligible(self) -> Iterable[str] | None:
        return {"advertise_keys": None, "share_keys": self.keys, "masked_input": self.shares,
                "unmask": self.survivors}[self.stage]

    def _check_keys(self, message: AdvertiseKeys) -> None:
        new = [unb64(message.cipher_key, "cipher_key"), unb64(message.mask_key, "mask_key")]
        known = {unb64(k, "key") for m in self.keys.values() for k in (m.cipher_key, m.mask_key)}
        if any(len(k) != masks.KEY_BYTES for k in new) or new[0] == new[1] or known & set(new):
            raise BadKeys(f"{message.sender!r} advertised a malformed or already used key")
        for key in new:  # a low-order point would break every peer's key agreement later
            masks.exchange(self._probe, key)

    def _holders(self, owner: str) -> set[str]:
        return ({owner} | self.graph[owner]) & set(self.keys)

    def _check_share_keys(self, message: ShareKeys) -> None:
        recipients = [s.recipient for s in message.shares]
        if len(set(recipients)) != len(recipients) or set(recipients) != self._holders(message.sender):
            raise BadShare(f"{message.sender!r} must send one sealed share to each of its "
                           f"{len(self._holders(message.sender))} holders that advertised keys")
        for sealed in message.shares:
            if len(unb64(sealed.ciphertext, "ciphertext")) != 2 * shamir.SHARE_BYTES + 16:
                raise BadShare(f"the sealed share from {message.sender!r} to {sealed.recipient!r} has a wrong size")

    def _check_vector(self, message: MaskedInput) -> np.ndarray:
        if message.dtype != "uint32":
            raise BadVector(f"the masked input of {message.sender!r} has dtype {message.dtype!r}, expected 'uint32'")
        if message.length != self.config.vector_length:
            raise BadVector(f"the masked input of {message.sender!r} has length {message.length}, "
                            f"expected {self.config.vector_length}")
        data = message.data
        if len(data) != 4 * message.length:
            raise BadVector(f"the masked input of {message.sender!r} carries {len(data)} bytes for "
                            f"{message.length} uint32 values")
        return np.frombuffer(data, dtype="<u4")

    def _check_unmask(self, message: UnmaskShares) -> None:
        sender, owners = message.sender, [s.owner for s in message.shares]
        expected = {owner for owner in self.shares if sender in self._holders(owner)}
        if len(set(owners)) != len(owners) or set(owners) != expected:
            raise BadShare(f"{sender!r} must reveal exactly one share for each of the {len(expected)} "
                           "owners it holds shares of")
        for revealed in message.shares:
            wanted = SELF_MASK if revealed.owner in self.masked else MASK_KEY
            if revealed.secret != wanted:
                raise BadShare(f"{sender!r} revealed the {revealed.secret!r} share of {revealed.owner!r}; "
                               f"the round needs its {wanted!r} share")
            sealed = next(s for s in self.shares[revealed.owner].shares if s.recipient == sender)
            commitment = sealed.self_mask_commitment if wanted == SELF_MASK else sealed.mask_key_commitment
            share = unb64(revealed.share, "share")
            if masks.share_commitment(self.config.round, revealed.owner, sender, wanted, share) != commitment:
                raise BadShare(f"the {wanted!r} share of {revealed.owner!r} from {sender!r} does not match "
                               "its commitment")

    # ---------------------------------------------------------------------------------------------- stages

    def _close(self, stage: str, arrived: Iterable[str]) -> tuple[str, ...]:
        if self.stage != stage:
            raise WrongStage(f"cannot close stage {stage!r} during stage {self.stage!r}")
        present = tuple(sorted(arrived))
        if len(present) < self.config.threshold:
            self.stage = "aborted"
            raise SecAggAborted(stage, len(present), self.config.threshold)
        return present

    def close_advertise(self) -> KeyDirectory:
        """End stage 1: the key directory for every client in ``U1``."""
        present = self._close("advertise_keys", self.keys)
        self.stage = "share_keys"
        return KeyDirectory(round=self.config.round, keys=[self.keys[c] for c in present])

    def close_share_keys(self) -> dict[str, ShareInbox]:
        """End stage 2: each client of ``U2`` gets the shares sealed for it by the others of ``U2``."""
        present = self._close("share_keys", self.shares)
        self.stage = "masked_input"
        inboxes: dict[str, list[ForwardedShares]] = {c: [] for c in present}
        for sender in present:
            for sealed in self.shares[sender].shares:
                if sealed.recipient in inboxes:
                    inboxes[sealed.recipient].append(ForwardedShares(sender=sender, ciphertext=sealed.ciphertext))
        return {c: ShareInbox(round=self.config.round, recipient=c, shares=inboxes[c]) for c in present}

    def close_masked_input(self) -> UnmaskRequest:
        """End stage 3: ask ``U3`` for the shares that remove the masks."""
        self.survivors = self._close("masked_input", self.masked)
        self.dropped = tuple(sorted(set(self.shares) - set(self.masked)))
        self.stage = "unmask"
        return UnmaskRequest(round=self.config.round, survivors=list(self.survivors), dropped=list(self.dropped))

    def close_unmask(self) -> np.ndarray:
        """End stage 4: the uint32 sum of the inputs of ``U3`` (the masks removed)."""
        responders = self._close("unmask", self.revealed)
        by_owner: dict[str, list[tuple[int, bytes]]] = {}
        for sender in responders:
            for revealed in self.revealed[sender].shares:
                by_owner.setdefault(revealed.owner, []).append(
                    (self.config.x_of(sender), unb64(revealed.share, "share")))
        for owner in (*self.survivors, *self.dropped):
            if len(by_owner.get(owner, [])) < self.config.threshold:
                self.stage = "aborted"
                raise SecAggAborted("unmask", len(by_owner.get(owner, [])), self.config.threshold,
                                    f"shares of {owner!r}")
        total = np.zeros(self.config.vector_length, dtype=np.uint32)
        for owner in self.survivors:
            np.add(total, self.masked[owner], out=total)
        masks.apply_masks(total, [(self._reconstruct(owner, by_owner[owner]), -1) for owner in self.survivors])
        for owner in self.dropped:
            self._remove_pair_masks(total, owner, self._reconstruct(owner, by_owner[owner]))
        self.stage = "done"
        return total

    def _reconstruct(self, owner: str, shares: list[tuple[int, bytes]]) -> bytes:
        """A secret of ``owner`` from committed shares; an abort when the owner dealt inconsistent ones."""
        try:
            return shamir.reconstruct(shares, self.config.threshold)
        except BadShare as exc:
            self.stage = "aborted"
            raise SecAggAborted("unmask", len(self.revealed), self.config.threshold, str(exc)) from None

    def _remove_pair_masks(self, total: np.ndarray, owner: str, private: bytes) -> None:
        """Take from ``total`` (in place) the masks the surviving neighbours of the dropped ``owner`` added
        for it."""
        key = masks.X25519PrivateKey.from_private_bytes(private)
        if masks.public_bytes(key) != unb64(self.keys[owner].mask_key, "mask_key"):
            self.stage = "aborted"
            raise SecAggAborted("unmask", len(self.revealed), self.config.threshold,
                                f"the shares of {owner!r} do not rebuild its advertised mask key")
        masks.apply_masks(total, [
            (masks.pair_seed(key, unb64(self.keys[peer].mask_key, "mask_key"), self.config.round, owner, peer),
             -masks.pair_sign(peer, owner))
            for peer in sorted(self.graph[owner] & set(self.survivors))])
