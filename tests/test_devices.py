"""The ``device`` fixture of tests/conftest.py: CPU always, CUDA where present, for torch and Open3D."""

from __future__ import annotations

import numpy as np

from tests.conftest import available_devices


def test_cpu_is_always_a_device() -> None:
    assert available_devices()[0] == "cpu"


def test_device_runs_torch_and_open3d(device: str) -> None:
    import open3d.core as o3c
    import torch

    x = torch.arange(6, dtype=torch.float32, device=device).reshape(2, 3)
    assert x.device.type == device and float((x @ x.T).sum()) == 83.0  # [[5, 14], [14, 50]]
    t = o3c.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3), device=o3c.Device(device.upper() + ":0"))
    assert np.array_equal(t.cpu().numpy(), x.cpu().numpy())
