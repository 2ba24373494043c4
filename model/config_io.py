"""Strict construction of config dataclasses from stored dicts (checkpoints, ONNX metadata, TOML)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict_strict(cls: type[T], values: dict[str, Any], what: str) -> T:
    """``cls(**values)``, refusing keys the dataclass does not know (a typo must not pass silently)."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {what}: {sorted(unknown)}; known: {sorted(known)}")
    return cls(**values)
