"""semmap.config_args: CLI defaults and help from the config dataclasses, ``semmap map --config``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from semmap.cli import build_parser, main
from semmap.commands.map import MAP_FLAGS, config_keys, map_config
from semmap.config_args import (
    add_dataclass_arguments,
    config_kwargs,
    dest_of,
    field_default,
    field_docs,
    field_help,
)
from semmap.pipeline import MapConfig
from semmap.stages import depth, rerun, semantic, tracking, views
from semmap.stages.depth import DepthStageConfig
from semmap.stages.rerun import RerunConfig
from semmap.stages.semantic import SemanticConfig
from semmap.stages.views import ViewsConfig


def _map_parser() -> argparse.ArgumentParser:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["map"]


# config class, field -> flag, fields whose CLI default or help is deliberately not the field's
EXPOSED = [
    (MapConfig, MAP_FLAGS, ()),
    (DepthStageConfig, depth.DEPTH_FLAGS, ("model",)),
    (SemanticConfig, semantic.SEMANTIC_FLAGS, ("encoder", "features")),
    (ViewsConfig, views.VIEWS_FLAGS, ()),
    (RerunConfig, rerun.RERUN_FLAGS, ("path",)),
    (tracking.TrackerConfig, tracking.TRACKING_FLAGS, ()),
]


def test_field_docs_reads_attribute_docstrings() -> None:
    @dataclasses.dataclass
    class Cfg:
        a: float = 0.5
        """First  field,
        metres."""
        b: int | None = None
        c: bool = False
        """A switch."""

    assert field_docs(Cfg) == {"a": "First field, metres.", "c": "A switch."}
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, Cfg, {"a": "--a-m", "b": "--bee", "c": "--c"})
    assert p.parse_args([]) == argparse.Namespace(a_m=0.5, bee=None, c=False)
    ns = p.parse_args(["--a-m", "2", "--bee", "3", "--c"])
    assert ns == argparse.Namespace(a_m=2.0, bee=3, c=True) and isinstance(ns.bee, int)
    assert config_kwargs(ns, Cfg, {"a": "--a-m", "b": "--bee", "c": "--c"}) == {"a": 2.0, "b": 3, "c": True}
    with pytest.raises(ValueError, match="no field 'zz'"):
        add_dataclass_arguments(argparse.ArgumentParser(), Cfg, {"zz": "--zz"})


@pytest.mark.parametrize("cls,flags,custom", EXPOSED, ids=[c.__name__ for c, _, _ in EXPOSED])
def test_cli_defaults_and_help_come_from_the_dataclass(cls, flags, custom) -> None:
    parser = _map_parser()
    actions = {a.dest: a for a in parser._actions}
    defaults = parser.parse_args(["src", "--out", "o"])
    for name, flag in flags.items():
        action = actions[dest_of(flag)]
        assert flag in action.option_strings
        if name in custom:
            continue
        assert getattr(defaults, dest_of(flag)) == field_default(cls, name), name
        doc = field_help(cls, name)
        assert doc and action.help.startswith(doc.replace("%", "%%")), (name, action.help)
    help_text = parser.format_help()
    for flag in flags.values():
        assert flag in help_text


def test_every_existing_flag_is_kept() -> None:
    flags = {s for a in _map_parser()._actions for s in a.option_strings}
    before = {
        "--out", "--voxel-size", "--stride", "--max-frames", "--depth-max", "--depth-min", "--trunc-voxels",
        "--min-observations", "--device", "--no-progress", "--depth-model", "--canonical-focal",
        "--complete-depth", "--fill-missing", "--estimated-depth-weight", "--map-pixel-weight",
        "--interpolated-depth-weight", "--drop-depth-every", "--poses", "--odometry", "--model-render",
        "--no-loop-closure", "--encoder", "--semantic-voxel-size", "--features", "--feature-stride",
        "--crop-scales", "--kf-translation", "--kf-rotation-deg", "--feature-depth", "--save-views",
        "--no-views", "--views-width", "--views-translation", "--views-rotation-deg", "--views-max",
        "--rerun", "--rerun-width", "--rerun-image-every",
    }
    assert before <= flags, before - flags


def test_depth_range_and_device_reach_every_consumer() -> None:
    args = _map_parser().parse_args(["src", "--out", "o", "--depth-max", "2.5", "--depth-min", "0.3",
                                     "--poses", "estimate", "--complete-depth"])
    cfg = map_config(args)
    tsdf = cfg.tsdf_config()
    fusion = cfg.fusion_config()
    trk = tracking.from_args(args).config
    dep = depth.from_args(args).config
    for c in (cfg, tsdf, fusion, trk):
        assert (c.depth_min_m, c.depth_max_m) == (0.3, 2.5), type(c).__name__
    assert tsdf.device == trk.device == "CPU:0" and dep.device == cfg.device == "cpu"


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_config_file_sets_options_and_flags_override(tmp_path: Path) -> None:
    f = _write(tmp_path / "map.yaml", {"voxel_size_m": 0.05, "depth_max_m": 3.0, "stride": 3, "poses": "estimate",
                                       "crop_scales": [0.4, 0.6], "save_views": True, "views_width": 200})
    args = _map_parser().parse_args(["src", "--out", "o", "--config", str(f)])
    cfg = map_config(args)
    assert (cfg.voxel_size_m, cfg.depth_max_m, cfg.stride) == (0.05, 3.0, 3)
    assert args.poses == "estimate" and args.crop_scales == [0.4, 0.6] and args.save_views
    assert views.from_args(args).config.width == 200
    assert tracking.from_args(args).config.depth_max_m == 3.0
    # a flag overrides the file, before or after --config, also when it repeats the dataclass default
    for argv in (["--voxel-size", "0.02", "--config", str(f)], ["--config", str(f), "--voxel-size", "0.02"]):
        args = _map_parser().parse_args(["src", "--out", "o", *argv, "--stride", "1"])
        cfg = map_config(args)
        assert (cfg.voxel_size_m, cfg.stride, cfg.depth_max_m) == (0.02, 1, 3.0)


def test_dump_config_round_trips(tmp_path: Path, capsys) -> None:
    f = _write(tmp_path / "a.yaml", {"voxel_size_m": 0.04, "encoder": "lite", "rerun": str(tmp_path / "r.rrd")})
    assert main(["map", "src", "--out", str(tmp_path / "o"), "--config", str(f), "--depth-min", "0.2",
                 "--dump-config"]) == 0
    dumped = yaml.safe_load(capsys.readouterr().out)
    assert set(dumped) == set(config_keys())
    assert dumped["voxel_size_m"] == 0.04 and dumped["depth_min_m"] == 0.2 and dumped["encoder"] == "lite"
    assert not (tmp_path / "o").exists()
    g = _write(tmp_path / "b.yaml", dumped)
    a1 = _map_parser().parse_args(["src", "--out", "o", "--config", str(g)])
    a2 = _map_parser().parse_args(["src", "--out", "o", "--config", str(f), "--depth-min", "0.2"])
    assert {k: v for k, v in vars(a1).items() if k != "config"} == {k: v for k, v in vars(a2).items() if k != "config"}


@pytest.mark.parametrize(
    "doc,message",
    [({"voxel_sise_m": 0.05}, "unknown key 'voxel_sise_m'; did you mean voxel_size_m"),
     ({"stride": "three"}, "stride: 'three' is not a valid int"),
     ({"poses": "sometimes"}, "poses: 'sometimes' is not one of"),
     ({"out": "x"}, "unknown key 'out'")],
)
def test_config_file_errors_name_the_key_and_file(tmp_path: Path, capsys, doc, message) -> None:
    f = _write(tmp_path / "bad.yaml", doc)
    with pytest.raises(SystemExit) as e:
        main(["map", "src", "--out", str(tmp_path / "o"), "--config", str(f)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(f) in err and message in err, err


def test_config_file_missing_or_not_a_mapping(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["map", "src", "--out", "o", "--config", str(tmp_path / "none.yaml")])
    assert "none.yaml does not exist" in capsys.readouterr().err
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SystemExit):
        main(["map", "src", "--out", "o", "--config", str(tmp_path / "list.yaml")])
    assert "must be a mapping" in capsys.readouterr().err


def test_the_documented_half_resolution_tracking_option_builds_its_tracker() -> None:
    from semmap.stages import tracking

    args = _map_parser().parse_args(["src", "--out", "o", "--poses", "estimate", "--track-downsample", "2",
                                     "--track-iterations", "6", "4", "3"])
    cfg = tracking.from_args(args).config
    assert (cfg.downsample, cfg.iterations, cfg.refine_schedule) == (2, (6, 4, 3), (0, 3, 2))
