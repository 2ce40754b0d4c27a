"""`semmap depth`: monocular metric depth for an image or every frame of a source.

Per frame it writes, into ``--out``:

- ``<stem>.depth.png``: uint16 millimetres, 0 = invalid (depth above 65.535 m saturates);
- ``<stem>.depth.npy``: float32 metres, (H, W), 0 = invalid;
- ``<stem>.preview.png``: the colour image beside the depth in a colour map (turbo, near =
  blue, 0 m .. the frame's 99th percentile; invalid black).

``stem`` is the colour file's stem (:func:`eval.depth_protocols.prediction_stem`), which is what
``semmap eval depth --pred`` reads back.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ORDER = 60

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "depth",
        help="monocular metric depth for an image or a source (PNG/NPY + preview)",
        description="Run a depth model on one image or on the frames of a source and write, per frame, "
        "<stem>.depth.png (uint16 mm), <stem>.depth.npy (float32 m) and <stem>.preview.png. "
        "For a source with sensor depth, prints the standard depth metrics against it.",
    )
    p.add_argument("input", help="an image file, or a source (dataset folder, 'name:/path')")
    p.add_argument("--model", required=True, metavar="SPEC", help="hf:<name-or-path> or depthclip:<encoder spec>")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--canonical-focal", type=float, default=None, metavar="PX", help="model is metric at this focal")
    cam = p.add_argument_group("camera of an image input (default: fx = fy = 0.8 * width, centred)")
    cam.add_argument("--camera-json", type=Path, default=None, help="JSON with fx, fy, cx, cy, width, height")
    cam.add_argument("--fx", type=float, default=None, help="focal length in pixels")
    cam.add_argument("--fy", type=float, default=None, help="default: fx")
    cam.add_argument("--cx", type=float, default=None, help="default: (width - 1) / 2")
    cam.add_argument("--cy", type=float, default=None, help="default: (height - 1) / 2")
    p.add_argument(
        "--align-to-sensor",
        action="store_true",
        help="fit scale and shift to the frame's sensor depth (needed for relative models; sources with depth)",
    )
    p.add_argument("--stride", type=int, default=1, help="source: every N-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="source: at most N frames")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=cmd_depth)


def image_camera(image: Path, rgb: np.ndarray, args: argparse.Namespace):
    """The camera of a single image from --camera-json or --fx/--fy/--cx/--cy (checked against its size)."""
    from sensors import Camera

    h, w = rgb.shape[:2]
    if args.camera_json is not None:
        try:
            d = json.loads(Path(args.camera_json).read_text())
            camera = Camera(*(float(d[k]) for k in ("fx", "fy", "cx", "cy")), int(d["width"]), int(d["height"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{args.camera_json}: need fx, fy, cx, cy, width, height ({type(e).__name__}: {e})") from e
        if camera.shape != (h, w):
            raise ValueError(
                f"{image}: image is {w}x{h} but the camera in {args.camera_json} is {camera.width}x{camera.height}"
            )
        return camera
    fx = args.fx if args.fx is not None else 0.8 * w
    return Camera(
        fx,
        args.fy if args.fy is not None else fx,
        args.cx if args.cx is not None else (w - 1) / 2,
        args.cy if args.cy is not None else (h - 1) / 2,
        w,
        h,
    )


def _frames(args: argparse.Namespace):
    """(frames iterator, count or None, dataset key, closer) for an image or a source."""
    from sensors import Frame, open_source
    from sensors.io import read_rgb

    path = Path(args.input)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"image does not exist: {path}")
        rgb = read_rgb(path)
        frame = Frame(rgb, None, image_camera(path, rgb, args), name=str(path), depth_source="sensor")
        return iter([frame]), 1, None, lambda: None
    if any(v is not None for v in (args.camera_json, args.fx, args.fy, args.cx, args.cy)):
        raise ValueError("--camera-json / --fx / --fy / --cx / --cy apply to an image input; a source has its own camera")
    from eval.depth_protocols import dataset_of

    source = open_source(args.input)
    return source.frames(args.stride, args.max_frames), source.count(args.stride, args.max_frames), dataset_of(source), source.close


def depth_preview(rgb: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
    """(H, 2W, 3) uint8: the colour image beside the depth coloured with turbo (0 .. 99th percentile; invalid black)."""
    from matplotlib import colormaps

    valid = np.isfinite(depth_m) & (depth_m > 0)
    top = float(np.percentile(depth_m[valid], 99)) if valid.any() else 1.0
    coloured = colormaps["turbo"](np.clip(depth_m / max(top, 1e-6), 0.0, 1.0))[..., :3]
    coloured = (255 * coloured).round().astype(np.uint8)
    coloured[~valid] = 0
    return np.concatenate([rgb, coloured], axis=1)


def write_depth_outputs(out: Path, stem: str, rgb: np.ndarray, depth_m: np.ndarray) -> list[Path]:
    """Write ``<stem>.depth.png`` (uint16 mm), ``<stem>.depth.npy`` (float32 m) and ``<stem>.preview.png``."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    depth_m = np.where(np.isfinite(depth_m) & (depth_m > 0), depth_m, 0.0).astype(np.float32)
    paths = [out / f"{stem}.depth.png", out / f"{stem}.depth.npy", out / f"{stem}.preview.png"]
    mm = np.clip(np.round(depth_m.astype(np.float64) * 1000.0), 0, 65535).astype(np.uint16)
    Image.fromarray(mm).save(paths[0])
    np.save(paths[1], depth_m)
    Image.fromarray(depth_preview(rgb, depth_m)).save(paths[2])
    return paths


def cmd_depth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from eval.depth_metrics import depth_metrics, format_depth_table, mean_metrics
    from eval.depth_protocols import prediction_stem
    from mapping.depth import load_depth_model

    model = load_depth_model(args.model, device=args.device, canonical_focal_px=args.canonical_focal)
    frames, total, dataset, close = _frames(args)
    rows = []
    written = 0
    try:
        for frame in tqdm(frames, total=total, desc="depth", unit="frame", disable=total == 1):
            anchors = frame.depth if args.align_to_sensor else None
            if args.align_to_sensor and anchors is None:
                raise ValueError(f"{frame.name}: --align-to-sensor needs sensor depth, and this input has none")
            depth, _ = model.estimate_metric(frame.rgb, frame.camera, anchors=anchors, align_metric=anchors is not None)
            stem = prediction_stem(frame)
            write_depth_outputs(args.out, stem, frame.rgb, depth)
            written += 1
            if frame.depth is not None and (frame.depth > 0).any():
                rows.append((stem, depth_metrics(depth, frame.depth, dataset=dataset)))
    finally:
        close()
    if written == 0:
        raise ValueError(f"{args.input}: no frames")
    note = " (aligned to sensor depth)" if args.align_to_sensor else ""
    print(f"{model.name}: {model.output_kind} depth{note} for {written} frame(s)")
    if rows:
        print("against the sensor depth:")
        print(format_depth_table([*rows, (f"mean ({len(rows)})", mean_metrics([m for _, m in rows]))] if len(rows) > 1 else rows))
    print(f"wrote depth to {args.out}/ (<stem>.depth.png uint16 mm, <stem>.depth.npy float32 m, <stem>.preview.png)")
    return 0
