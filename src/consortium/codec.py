"""The tensor codec: named tensors cross the network and the disk as safetensors bytes, never pickled.

An update upload is tensors plus its :class:`~consortium.protocol.UpdateMeta` as strict JSON under
``__metadata__['update']``; headers are parsed by :mod:`consortium.tensor_header` before anything is loaded.
"""

from __future__ import annotations

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
