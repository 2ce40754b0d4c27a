"""Sensors fixtures: generated mini-datasets beside the real ones (tests/sensors/minidata.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import data_path
from tests.sensors.minidata import GeneratedData

SOURCES = ("generated", "real")
"""Parameters of a dataset fixture: the generated stand-in (always there) and the real folder
(skipped when ``../shared/data`` is absent)."""


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GeneratedData:
    return GeneratedData(tmp_path_factory.mktemp("generated-data"))


def dataset(kind: str, generated: GeneratedData, name: str, *parts: str) -> Path:
    """``kind`` "real": the folder in the shared data (skips when absent); "generated": its stand-in."""
    return data_path(name, *parts) if kind == "real" else generated.path(name, *parts)


@pytest.fixture(scope="module", params=SOURCES)
def kitchen_any(request: pytest.FixtureRequest, generated: GeneratedData) -> Path:
    """Redkitchen, or its generated stand-in (frames 0-5, 10-110 every 10, 55; tests/sensors/minidata.py)."""
    return dataset(request.param, generated, "7scenes-redkitchen")
