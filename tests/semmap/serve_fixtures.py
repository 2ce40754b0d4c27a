"""Fixtures shared by the service tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_threads():
    """The service pins torch to one thread process-wide (EncoderCache); give the rest of the
    test session its setting back."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
