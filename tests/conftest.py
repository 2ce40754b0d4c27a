"""Shared fixtures: the real data folder, a small posed 7-Scenes slice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("SEMMAP_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


def data_path(*parts: str) -> Path:
    """Path inside the shared real-data folder; skips the test if the folder is absent."""
    p = DATA_ROOT.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not found at {p} (set SEMMAP_DATA)")
    return p


@pytest.fixture
def redkitchen() -> Path:
    return data_path("7scenes-redkitchen")


@pytest.fixture
def replica_office0() -> Path:
    return data_path("replica-office0")
