"""Licences of derived works: a model inherits the licence terms of every dataset it was trained on."""

from __future__ import annotations

from collections.abc import Iterable


def derive_licence(dataset_licences: Iterable[str]) -> str:
    """An SPDX expression covering all inputs: one licence if they agree, their conjunction otherwise."""
    unique = sorted({lic.strip() for lic in dataset_licences if lic.strip()})
    if not unique:
        return "NOASSERTION"
    if len(unique) == 1:
        return unique[0]
    return " AND ".join(f"({lic})" if " " in lic else lic for lic in unique)
