"""A round's configuration and its messages: strict, bounded pydantic models that can travel as JSON.

Binary fields are base64 (standard alphabet, padded) with exact or bounded lengths; ids follow
:data:`CLIENT_ID_PATTERN`; lists are bounded by :data:`MAX_CLIENTS`. The one large field, a masked vector, is
raw bytes: on the wire a :class:`MaskedInput` is a binary frame (:func:`to_wire`: ``MASKED_INPUT_MAGIC``,
the header's length as 4 little-endian bytes, the JSON header, then the little-endian uint32 words as they
are), so the hub decodes no base64 and copies nothing per element; its JSON form (``data`` in base64) is
accepted too. Parsing a message does not trust it: the client and server state machines check everything
that depends on the round (see their modules).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from consortium.fl.core import MAX_MODEL_PARAMS
from consortium.fl.privacy.secagg.errors import MalformedMessage
from consortium.fl.privacy.secagg.graph import neighbours

MAX_CLIENTS = 4096
MAX_VECTOR_LENGTH = MAX_MODEL_PARAMS
CLIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$"
SEALED_SHARES_BYTES = 2 * 66 + 16
"""Two 66-byte shares (mask key, self-mask seed) and the Poly1305 tag."""


def _b64_chars(num_bytes: int) -> int:
    return 4 * ((num_bytes + 2) // 3)


ClientId = Annotated[str, Field(pattern=CLIENT_ID_PATTERN)]
RoundId = Annotated[int, Field(ge=0, lt=2**63)]
Key = Annotated[str, Field(min_length=_b64_chars(32), max_length=_b64_chars(32))]
Sealed = Annotated[str, Field(min_length=_b64_chars(SEALED_SHARES_BYTES), max_length=_b64_chars(SEALED_SHARES_BYTES))]
Share = Annotated[str, Field(min_length=_b64_chars(66), max_length=_b64_chars(66))]
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Vector = Annotated[bytes, Field(max_length=4 * MAX_VECTOR_LENGTH)]
MASKED_INPUT_MAGIC = b"consortium-secagg/1 masked-input\n"
MAX_HEADER_BYTES = 1024


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    """The bytes of a base64 field; MalformedMessage naming ``what`` when it is not valid base64."""
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise MalformedMessage(f"{what} is not valid base64") from None


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class SecAggConfig(Strict):
    """What every party of a round agrees on before it starts (part of the task the hub hands out)."""

    round: RoundId
    clients: list[ClientId] = Field(min_length=2, max_length=MAX_CLIENTS)
    threshold: int = Field(ge=2, le=MAX_CLIENTS)
    vector_length: int = Field(ge=1, le=MAX_VECTOR_LENGTH)
    degree: int | None = Field(default=None, ge=2, le=MAX_CLIENTS)
    graph_seed: int = Field(default=0, ge=0, lt=2**63)

    @model_validator(mode="after")
    def _consistent(self) -> SecAggConfig:
        if len(set(self.clients)) != len(self.clients):
            raise ValueError("clients: a client is listed twice")
        neighbourhood = len(self.clients) if self.degree is None else min(self.degree + 1, len(self.clients))
        if self.threshold > neighbourhood:
            raise ValueError(
                f"threshold: {self.threshold} exceeds the {neighbourhood} holders of each client's shares"
            )
        if 2 * self.threshold <= neighbourhood:
            raise ValueError(
                f"threshold: {self.threshold} must exceed half of the {neighbourhood} holders of a client's shares"
            )
        neighbours(self.clients, self.degree, self.graph_seed)  # raises for a bad degree
        return self

    def x_of(self, client_id: str) -> int:
        """The client's Shamir coordinate: 1 + its index among the sorted client ids."""
        return sorted(self.clients).index(client_id) + 1


class AdvertiseKeys(Strict):
    """Stage 1, client to server: the client's two fresh X25519 public keys."""

    stage: Literal["advertise_keys"] = "advertise_keys"
    round: RoundId
    sender: ClientId
    cipher_key: Key
    mask_key: Key


class KeyDirectory(Strict):
    """Stage 1, server to clients: the keys of everyone who advertised."""

    round: RoundId
    keys: list[AdvertiseKeys] = Field(max_length=MAX_CLIENTS)


class EncryptedShares(Strict):
    """One holder's shares of the sender's two secrets, sealed for it, with a commitment to each share."""

    recipient: ClientId
    ciphertext: Sealed
    mask_key_commitment: Digest
    self_mask_commitment: Digest


class ShareKeys(Strict):
    """Stage 2, client to server: the sealed shares for each holder (itself included)."""

    stage: Literal["share_keys"] = "share_keys"
    round: RoundId
    sender: ClientId
    shares: list[EncryptedShares] = Field(max_length=MAX_CLIENTS)


class ForwardedShares(Strict):
    sender: ClientId
    ciphertext: Sealed


class ShareInbox(Strict):
    """Stage 2, server to one client: the sealed shares addressed to it."""

    round: RoundId
    recipient: ClientId
    shares: list[ForwardedShares] = Field(max_length=MAX_CLIENTS)


class MaskedInput(Strict):
    """Stage 3, client to server: the masked vector, little-endian uint32 words (raw bytes; base64 in the
    JSON form)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, val_json_bytes="base64",
                              ser_json_bytes="base64")

    stage: Literal["masked_input"] = "masked_input"
    round: RoundId
    sender: ClientId
    dtype: str = Field(max_length=16)
    length: int = Field(ge=0, le=MAX_VECTOR_LENGTH)
    data: Vector


class UnmaskRequest(Strict):
    """Stage 4, server to the clients that sent masked inputs: who survived and who dropped after sharing."""

    round: RoundId
    survivors: list[ClientId] = Field(max_length=MAX_CLIENTS)
    dropped: list[ClientId] = Field(max_length=MAX_CLIENTS)


class RevealedShare(Strict):
    owner: ClientId
    secret: Literal["mask_key", "self_mask"]
    share: Share


class UnmaskShares(Strict):
    """Stage 4, client to server: for each share owner it holds, the self-mask share of a survivor or the
    mask-key share of a dropped client, never both."""

    stage: Literal["unmask"] = "unmask"
    round: RoundId
    sender: ClientId
    shares: list[RevealedShare] = Field(max_length=MAX_CLIENTS)


ClientMessage = Annotated[AdvertiseKeys | ShareKeys | MaskedInput | UnmaskShares, Field(discriminator="stage")]


_CLIENT_MESSAGE: TypeAdapter[AdvertiseKeys | ShareKeys | MaskedInput | UnmaskShares] = TypeAdapter(ClientMessage)


class _MaskedInputHeader(Strict):
    """A binary :class:`MaskedInput` frame's header: every field but the vector."""

    stage: Literal["masked_input"]
    round: RoundId
    sender: ClientId
    dtype: str = Field(max_length=16)
    length: int = Field(ge=0, le=MAX_VECTOR_LENGTH)


def to_wire(message: BaseModel) -> str | bytes:
    """What a client sends: a :class:`MaskedInput` as its binary frame, any other message as JSON."""
    if not isinstance(message, MaskedInput):
        return message.model_dump_json()
    header = message.model_dump_json(exclude={"data"}).encode()
    return MASKED_INPUT_MAGIC + len(header).to_bytes(4, "little") + header + message.data


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors())


def _parse_masked_frame(raw: bytes) -> MaskedInput:
    start = len(MASKED_INPUT_MAGIC) + 4
    size = int.from_bytes(raw[len(MASKED_INPUT_MAGIC):start], "little")
    if len(raw) < start or size > MAX_HEADER_BYTES or len(raw) < start + size:
        raise MalformedMessage("the masked-input frame is truncated or its header is too long")
    header = _MaskedInputHeader.model_validate_json(raw[start:start + size], strict=True)
    data = raw[start + size:]
    if len(data) > 4 * MAX_VECTOR_LENGTH:
        raise MalformedMessage(f"data: the masked vector carries more than {4 * MAX_VECTOR_LENGTH} bytes")
    return MaskedInput(**header.model_dump(), data=data)


def parse_client_message(raw: str | bytes) -> AdvertiseKeys | ShareKeys | MaskedInput | UnmaskShares:
    """A client message from JSON, or a masked input from its binary frame (:func:`to_wire`);
    MalformedMessage naming each bad field otherwise."""
    try:
        if isinstance(raw, bytes) and raw.startswith(MASKED_INPUT_MAGIC):
            return _parse_masked_frame(raw)
        return _CLIENT_MESSAGE.validate_json(raw, strict=True)
    except ValidationError as exc:
        raise MalformedMessage(_problems(exc)) from None
