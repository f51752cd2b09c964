"""The tensor codec: named tensors cross the network and the disk as safetensors bytes, never pickled.

An update upload is tensors plus its :class:`~consortium.protocol.UpdateMeta` as strict JSON under
``__metadata__['update']``; headers are parsed by :mod:`consortium.tensor_header` before anything is loaded.
"""

from __future__ import annotations

from typing import Any

import orjson
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from consortium import strict_json
from consortium.protocol import UpdateMeta
from consortium.tensor_header import parse_header


def encode_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise named tensors as safetensors bytes (contiguous CPU copies)."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return st_save(flat, metadata=metadata)


def tensor_block(payload: bytes) -> tuple[dict[str, Any], memoryview]:
    """The tensor entries of a well-formed safetensors ``payload``'s header (its ``__metadata__`` left out)
    and its data block, for :func:`with_metadata`."""
    header_len = int.from_bytes(payload[:8], "little")
    header = orjson.loads(payload[8:8 + header_len])
    header.pop("__metadata__", None)
    return header, memoryview(payload)[8 + header_len:]


def with_metadata(tensors: dict[str, Any], data: memoryview, metadata: dict[str, str]) -> bytes:
    """The safetensors payload of :func:`tensor_block`'s ``tensors`` and ``data`` with ``metadata`` as its
    ``__metadata__``: the header is written anew (padded to 8 bytes, as the library does), the data block
    copied as it is, no tensor decoded or serialised again."""
    header = orjson.dumps({"__metadata__": metadata, **tensors})
    header += b" " * (-len(header) % 8)
    return b"".join((len(header).to_bytes(8, "little"), header, data))


def decode_tensors(data: bytes) -> dict[str, torch.Tensor]:
    """Parse safetensors bytes; raises ValueError on anything malformed."""
    try:
        return dict(st_load(data))
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"not a valid safetensors payload: {exc}") from exc


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors payload, read from its JSON header without loading tensors;
    ValueError when the header is not well formed (:func:`consortium.tensor_header.parse_header`)."""
    return parse_header(data).metadata


def encode_update(tensors: dict[str, torch.Tensor], meta: UpdateMeta) -> bytes:
    """An update upload: tensors plus the JSON header under ``__metadata__['update']``."""
    return encode_tensors(tensors, {"update": meta.model_dump_json()})


def decode_update(data: bytes) -> tuple[dict[str, torch.Tensor], UpdateMeta]:
    """Parse an update upload; ValueError (with the reason) when the bytes or header are bad."""
    meta_raw = safetensors_metadata(data).get("update")
    if meta_raw is None:
        raise ValueError("update has no 'update' metadata in its safetensors header")
    try:
        meta = UpdateMeta.model_validate(strict_json.loads(meta_raw))
    except strict_json.StrictJSONError as exc:
        raise ValueError(f"update metadata is not strict JSON: {exc.msg}{exc.where()}") from None
    return decode_tensors(data), meta
