"""The client side of a SecAgg+ round: one object per client per round, driven stage by stage.

1. :meth:`SecAggClient.advertise` makes two fresh X25519 key pairs: ``cipher`` (to seal shares) and
   ``mask`` (pairwise mask seeds).
2. :meth:`SecAggClient.share_keys` checks the key directory, draws the self-mask seed ``b``, splits ``b`` and
   the mask private key into Shamir shares for its holders (itself and its neighbours that advertised) and
   seals each holder's pair of shares.
3. :meth:`SecAggClient.masked_input` opens the shares addressed to it and sends
   ``y = x + PRG(b) + sum_v +-PRG(s_uv)`` over the neighbours ``v`` that shared keys.
4. :meth:`SecAggClient.unmask` reveals, for each owner it holds shares of, the self-mask share of a survivor or
   the mask-key share of a client that dropped after sharing; never both for one owner, and only while at
   least ``threshold`` of its neighbourhood survive.

Every incoming message is checked first; a bad one raises a :class:`~.errors.MessageError` and changes nothing.
"""

from __future__ import annotations

import os

import numpy as np

from consortium.fl.privacy.secagg import masks, shamir
from consortium.fl.privacy.secagg.errors import (
    BadKeys,
    BadShare,
    BadVector,
    SecAggAborted,
    UnknownSender,
    WrongRound,
    WrongStage,
)
from consortium.fl.privacy.secagg.graph import neighbours
from consortium.fl.privacy.secagg.messages import (
    AdvertiseKeys,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    RevealedShare,
    SecAggConfig,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
    b64,
    unb64,
)

MASK_KEY, SELF_MASK = "mask_key", "self_mask"


class SecAggClient:
    """One client's state in one round. ``random_bytes`` is ``os.urandom`` except in reproducible tests."""

    def __init__(self, config: SecAggConfig, client_id: str, random_bytes: masks.RandomBytes = os.urandom) -> None:
        if client_id not in config.clients:
            raise UnknownSender(f"{client_id!r} is not a client of this round")
        self.config, self.id, self._random = config, client_id, random_bytes
        self.neighbours = neighbours(config.clients, config.degree, config.graph_seed)[client_id]
        self.stage = "advertise_keys"
        self._cipher = masks.new_private_key(random_bytes)
        self._mask = masks.new_private_key(random_bytes)
        self._keys: dict[str, tuple[bytes, bytes]] = {}
        self._held: dict[str, tuple[bytes, bytes]] = {}
        self._self_seed = b""
        self._cipher_secrets: dict[str, bytes] = {}

    def _cipher_secret(self, peer: str, keys: dict[str, tuple[bytes, bytes]]) -> bytes:
        """The X25519 secret of this client's and ``peer``'s cipher keys, computed once per peer."""
        if peer not in self._cipher_secrets:
            self._cipher_secrets[peer] = masks.exchange(self._cipher, keys[peer][0])
        return self._cipher_secrets[peer]

    def _expect(self, stage: str, round_id: int) -> None:
        if self.stage != stage:
            raise WrongStage(f"client {self.id!r} is at stage {self.stage!r}, not {stage!r}")
        if round_id != self.config.round:
            raise WrongRound(f"message of round {round_id}, this is round {self.config.round}")

    def _abort_below_threshold(self, stage: str, count: int, what: str) -> None:
        if count < self.config.threshold:
            self.stage = "aborted"
            raise SecAggAborted(stage, count, self.config.threshold, what)

    def advertise(self) -> AdvertiseKeys:
        """Stage 1: the public keys."""
        self._expect("advertise_keys", self.config.round)
        self.stage = "share_keys"
        return AdvertiseKeys(round=self.config.round, sender=self.id,
                             cipher_key=b64(masks.public_bytes(self._cipher)),
                             mask_key=b64(masks.public_bytes(self._mask)))

    def _read_directory(self, directory: KeyDirectory) -> dict[str, tuple[bytes, bytes]]:
        keys: dict[str, tuple[bytes, bytes]] = {}
        for entry in directory.keys:
            if entry.round != self.config.round:
                raise WrongRound(f"the key directory holds keys of round {entry.round}")
            if entry.sender not in self.config.clients:
                raise UnknownSender(f"the key directory names {entry.sender!r}, not a client of this round")
            if entry.sender in keys:
                raise BadKeys(f"the key directory lists {entry.sender!r} twice")
            keys[entry.sender] = (unb64(entry.cipher_key, "cipher_key"), unb64(entry.mask_key, "mask_key"))
        mine = (masks.public_bytes(self._cipher), masks.public_bytes(self._mask))
        if keys.get(self.id) != mine:
            raise BadKeys(f"the key directory does not hold {self.id!r}'s own keys")
        every_key = [k for pair in keys.values() for k in pair]
        if len(set(every_key)) != len(every_key) or any(len(k) != masks.KEY_BYTES for k in every_key):
            raise BadKeys("the key directory holds a repeated or malformed key")
        return keys

    def share_keys(self, directory: KeyDirectory) -> ShareKeys:
        """Stage 2: seal a share of the mask key and of the self-mask seed for each holder."""
        self._expect("share_keys", directory.round)
        keys = self._read_directory(directory)
        holders = sorted(({self.id} | self.neighbours) & set(keys))
        self._abort_below_threshold("share_keys", len(holders), f"holders of {self.id!r}'s shares")
        self._self_seed = self._random(shamir.SECRET_BYTES)
        xs = [self.config.x_of(h) for h in holders]
        t, r = self.config.threshold, self.config.round
        key_shares = shamir.split(masks.private_bytes(self._mask), t, xs, self._random)
        seed_shares = shamir.split(self._self_seed, t, xs, self._random)
        sealed = []
        for holder, x in zip(holders, xs, strict=True):
            key = masks.share_key(self._cipher_secret(holder, keys), r, self.id, holder)
            sealed.append(EncryptedShares(
                recipient=holder,
                ciphertext=b64(masks.seal(key, key_shares[x] + seed_shares[x], r, self.id, holder)),
                mask_key_commitment=masks.share_commitment(r, self.id, holder, MASK_KEY, key_shares[x]),
                self_mask_commitment=masks.share_commitment(r, self.id, holder, SELF_MASK, seed_shares[x]),
            ))
        self._keys = keys
        self.stage = "masked_input"
        return ShareKeys(round=r, sender=self.id, shares=sealed)

    def _open_inbox(self, inbox: ShareInbox) -> dict[str, tuple[bytes, bytes]]:
        if inbox.recipient != self.id:
            raise UnknownSender(f"a share inbox for {inbox.recipient!r} reached {self.id!r}")
        held: dict[str, tuple[bytes, bytes]] = {}
        for forwarded in inbox.shares:
            sender = forwarded.sender
            if sender not in ({self.id} | self.neighbours) or sender not in self._keys:
                raise UnknownSender(f"{sender!r} did not advertise keys as a neighbour of {self.id!r}")
            if sender in held:
                raise BadShare(f"the inbox holds two share messages from {sender!r}")
            key = masks.share_key(self._cipher_secret(sender, self._keys), self.config.round, sender, self.id)
            plain = masks.open_sealed(key, unb64(forwarded.ciphertext, "ciphertext"), self.config.round,
                                      sender, self.id)
            held[sender] = (plain[:shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES:])
        if self.id not in held:
            raise BadShare(f"the inbox lacks {self.id!r}'s own shares")
        return held

    def masked_input(self, inbox: ShareInbox, vector: np.ndarray) -> MaskedInput:
        """Stage 3: ``vector`` (uint32 levels, see :mod:`.quantise`) under the self mask and the pairwise
        masks of every neighbour whose shares arrived."""
        self._expect("masked_input", inbox.round)
        if not isinstance(vector, np.ndarray) or vector.dtype != np.uint32:
            raise BadVector(f"the input must be a numpy uint32 array, got {getattr(vector, 'dtype', type(vector))}")
        if vector.shape != (self.config.vector_length,):
            raise BadVector(f"the input has shape {vector.shape}, expected ({self.config.vector_length},)")
        held = self._open_inbox(inbox)
        self._abort_below_threshold("masked_input", len(held), f"clients that shared keys with {self.id!r}")
        masked = vector.copy()
        masks.apply_masks(masked, [(self._self_seed, +1)] + [
            (masks.pair_seed(self._mask, self._keys[peer][1], self.config.round, self.id, peer),
             masks.pair_sign(self.id, peer))
            for peer in sorted(set(held) - {self.id})])
        self._held = held
        self.stage = "unmask"
        return MaskedInput(round=self.config.round, sender=self.id, dtype="uint32", length=vector.shape[0],
                           data=masked.astype("<u4", copy=False).tobytes())

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        """Stage 4: reveal one share per owner held: the self-mask share of a survivor, the mask-key share of
        a client that dropped after sharing."""
        self._expect("unmask", request.round)
        survivors, dropped = set(request.survivors), set(request.dropped)
        if len(survivors) != len(request.survivors) or len(dropped) != len(request.dropped):
            raise BadShare("the unmask request repeats a client")
        if survivors & dropped:
            raise BadShare(f"the unmask request names {sorted(survivors & dropped)[0]!r} as survivor and dropped")
        if self.id not in survivors:
            raise UnknownSender(f"the unmask request does not count {self.id!r} among the survivors")
        unaccounted = set(self._held) - survivors - dropped
        not_shared = ((survivors | dropped) & ({self.id} | self.neighbours)) - set(self._held)
        if unaccounted or not_shared:
            raise BadShare("the unmask request does not split this client's share owners into survivors "
                           "and dropped")
        self._abort_below_threshold("unmask", len(survivors & set(self._held)),
                                    f"survivors among {self.id!r}'s neighbourhood")
        revealed = [
            RevealedShare(owner=owner, secret=SELF_MASK, share=b64(self._held[owner][1])) if owner in survivors
            else RevealedShare(owner=owner, secret=MASK_KEY, share=b64(self._held[owner][0]))
            for owner in sorted(self._held)
        ]
        self.stage = "done"
        return UnmaskShares(round=self.config.round, sender=self.id, shares=revealed)
