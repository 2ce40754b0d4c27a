"""build_map: stages, skipped frames, early stops keep what was integrated."""

from __future__ import annotations

import numpy as np
import pytest

from semmap.pipeline import MapConfig, SkipFrame, Stage, StopMapping, build_map, save_map
from sensors import Camera, Frame
from sensors.base import IndexedSource


class PlaneSource(IndexedSource):
    """n frames of a fronto-parallel plane at 1.003 m, camera moving 1 cm per frame along x."""

    def __init__(self, n: int = 8) -> None:
        self.n = n
        self.camera = Camera(50.0, 50.0, 31.5, 23.5, 64, 48)

    def __len__(self) -> int:
        return self.n

    def load(self, i: int) -> Frame:
        T = np.eye(4)
        T[0, 3] = 0.01 * i
        return Frame(np.full((48, 64, 3), 100, np.uint8), np.full((48, 64), 1.003, np.float32), self.camera, T,
                     timestamp=0.1 * i, index=i)


class Interrupt(Stage):
    name = "interrupt"

    def __init__(self, at: int, exc: BaseException) -> None:
        self.at, self.exc = at, exc

    def before_integrate(self, frame, tsdf):
        if frame.index == self.at:
            raise self.exc
        return frame


class DropOdd(Stage):
    name = "drop_odd"

    def before_integrate(self, frame, tsdf):
        if frame.index % 2:
            raise SkipFrame("odd frame")
        return frame

    def save_into(self, directory):
        (directory / "drop_odd.txt").write_text("ok")
        return ["drop_odd.txt"]

    def metadata(self):
        return {"dropped": "odd"}


cfg = MapConfig(voxel_size_m=0.02, progress=False)


def test_skip_frames_and_stage_outputs(tmp_path):
    st = DropOdd()
    res = build_map(PlaneSource(8), cfg, [st])
    assert res.frames_seen == 8 and res.frames_integrated == 4
    assert len(res.frames_skipped) == 4 and "odd frame" in res.frames_skipped[0]
    assert "drop_odd" in res.timings_s
    paths = save_map(res, tmp_path / "m", "planes", cfg, [st])
    assert paths["drop_odd.txt"].read_text() == "ok"
    import json

    meta = json.loads((tmp_path / "m" / "map.json").read_text())
    assert meta["stages"]["drop_odd"] == {"dropped": "odd"}
    assert meta["stopped_early"] is None


# Exception factories, not instances: a raised instance keeps its traceback (build_map's frames,
# the TSDF's Open3D buffers) for as long as the parametrize mark holds it, i.e. until exit.
@pytest.mark.parametrize("make_exc", [KeyboardInterrupt, lambda: StopMapping("tracking lost")],
                         ids=["KeyboardInterrupt", "StopMapping"])
def test_early_stop_keeps_integrated_frames(make_exc, tmp_path, capsys):
    res = build_map(PlaneSource(8), cfg, [Interrupt(5, make_exc())])
    assert res.frames_integrated == 5
    assert res.stopped_early
    assert "stopped early" in capsys.readouterr().err
    save_map(res, tmp_path / "m", "planes", cfg)
    assert (tmp_path / "m" / "map.json").is_file()


def test_no_integrable_frame_is_an_error():
    with pytest.raises(ValueError, match="no frame could be integrated"):
        build_map(PlaneSource(3), cfg, [Interrupt(0, StopMapping("at once"))])
