"""Shared fixtures. Tests that need the real speech data skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("KWS_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = shared_data_dir()
    if not (root / "gsc" / "manifest.csv").exists() or not (root / "fsdd" / "manifest.csv").exists():
        pytest.skip(f"real speech data not found at {root} (set KWS_DATA_DIR to the folder holding gsc/ and fsdd/)")
    return root
