"""Shared fixtures: generated rooms rendered along an orbit and mapped with stored views."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOM_SEEDS = (0, 3, 7)
"""Seeds of the acceptance rooms (several layouts: chairs 2-4, box on either shelf board)."""


def map_room(seed: int, out: Path, frames: int = 40, width: int = 320, voxel_m: float = 0.02, noise: str = "none"):
    """Render ``make_room(seed)`` along an orbit, map it at ``voxel_m`` with the views stage.

    Returns (scene, map directory).
    """
    from semmap.pipeline import MapConfig, build_map, save_map
    from semmap.stages.views import ViewsConfig, ViewsStage
    from sensors import Camera
    from sensors.scenes import make_room, orbit_trajectory
    from sensors.synthetic import SyntheticSource

    scene = make_room(seed=seed)
    h = width * 3 // 4
    camera = Camera(0.8 * width, 0.8 * width, (width - 1) / 2, (h - 1) / 2, width, h)
    source = SyntheticSource(scene, orbit_trajectory(scene, frames), camera=camera, noise=noise, noise_seed=seed)
    cfg = MapConfig(voxel_size_m=voxel_m, depth_max_m=6.0, progress=False)
    stages = [ViewsStage(ViewsConfig(width=width))]
    result = build_map(source, cfg, stages)
    save_map(result, out, f"room seed {seed}", cfg, stages)
    return scene, out


@pytest.fixture(scope="session")
def room_maps(tmp_path_factory) -> dict[int, tuple]:
    """{seed: (scene, map_dir)} for :data:`ROOM_SEEDS` (built once per test session)."""
    root = tmp_path_factory.mktemp("rooms")
    return {s: map_room(s, root / f"room{s}") for s in ROOM_SEEDS}


@pytest.fixture(scope="session")
def room_graphs(room_maps) -> dict[int, tuple]:
    """{seed: (scene, map_dir, scene graph without embeddings)}."""
    from scenegraph.build import GraphConfig, build_scene_graph

    return {s: (scene, d, build_scene_graph(d, GraphConfig(embed=False))) for s, (scene, d) in room_maps.items()}
