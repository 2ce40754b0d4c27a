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


def available_devices() -> list[str]:
    """Torch device names to run device-aware tests on: "cpu" always, "cuda" where torch sees a GPU."""
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The ``device`` fixture: a test that takes ``device`` (a torch device name; Open3D's is
    ``device.upper() + ":0"``) runs once per :func:`available_devices` entry. Torch is only
    imported when some collected test asks for it."""
    own = any("device" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize") if m.args)
    if "device" in metafunc.fixturenames and not own:
        metafunc.parametrize("device", available_devices())
