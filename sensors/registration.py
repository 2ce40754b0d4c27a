"""Depth-to-colour registration: re-render a depth image in another camera.

Used by readers whose depth and colour streams come from different cameras
(7-Scenes: Kinect v1 depth and colour are offset and have different focal
lengths). See docs/conventions.md for axes, pixel centres and units.
"""

from __future__ import annotations

import numpy as np

from sensors.camera import Camera


def register_depth_to_color(
    depth_m: np.ndarray,
    depth_cam: Camera,
    color_cam: Camera,
    T_color_depth: np.ndarray,
    splat: bool = False,
) -> np.ndarray:
    """Re-project a depth image into the colour camera (forward warp with a z-buffer).

    Every valid depth pixel is back-projected in the depth camera, moved into the
    colour camera frame by ``T_color_depth`` (``p_color = T_color_depth @ p_depth``),
    and projected to the nearest colour pixel centre. Where several depth pixels land
    on one colour pixel the nearest (smallest colour-frame z) wins. Colour pixels that
    receive no depth pixel stay 0; nothing is interpolated or filled.

    ``splat=False`` (default) writes each depth pixel to one colour pixel. That is
    hole-free when the colour image is sampled no finer than the depth image (7-Scenes:
    colour focal 531.8 px < depth focal 585 px). When upsampling (colour focal larger than
    depth focal) use ``splat=True``: each depth pixel then covers the 2x2 block of colour
    pixels floor(u_c) .. floor(u_c) + 1, floor(v_c) .. floor(v_c) + 1 around its projection,
    which closes the cracks of a forward warp for upsampling factors up to 2 (ScanNet colour
    is about 2x its depth), at the cost of fattening foreground edges by up to one pixel
    (still z-buffered, so foreground never hides behind background).

    Args:
        depth_m: (Hd, Wd) depth in metres along the depth camera's optical axis,
            0 (or non-finite) = invalid. Must match ``depth_cam.shape``.
        depth_cam: intrinsics of the depth image.
        color_cam: intrinsics of the colour image (defines the output size).
        T_color_depth: (4, 4) rigid transform taking depth-camera points (metres,
            OpenCV axes) to colour-camera points.
        splat: write a 2x2 footprint per depth pixel instead of one pixel.
    Returns:
        (Hc, Wc) float32 depth in metres along the colour camera's optical axis,
        0 = invalid.
    Raises:
        ValueError: on a shape mismatch or a transform that is not a finite 4x4.

    Speed: 3-10 ms for a 640x480 Kinect frame on one busy CPU core (numpy 2.4). Needs
    numpy >= 1.25 for a fast ``np.minimum.at``; older numpy is correct but several times slower.
    """
    depth_m = np.asarray(depth_m)
    if depth_m.shape != depth_cam.shape:
        raise ValueError(f"depth shape {depth_m.shape} does not match depth camera {depth_cam.shape}")
    T = np.asarray(T_color_depth, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"T_color_depth must be a finite 4x4 matrix, got shape {T.shape}")

    hc, wc = color_cam.shape
    hd, wd = depth_cam.shape
    # Homogeneous colour pixel of depth pixel (u, v) with depth z:
    #   h = K_c (R z K_d^-1 [u, v, 1]^T + t) = z A [u, v, 1]^T + b,  A = K_c R K_d^-1,  b = K_c t,
    # and (u_c, v_c) = (h0 / h2, h1 / h2), colour-frame depth z_c = h2 (K_c's last row is [0, 0, 1]).
    A = color_cam.K @ T[:3, :3] @ np.linalg.inv(depth_cam.K)
    b = color_cam.K @ T[:3, 3]
    u = np.arange(wd, dtype=np.float32)
    v = np.arange(hd, dtype=np.float32)[:, None]
    valid = np.flatnonzero(np.isfinite(depth_m) & (depth_m > 0))
    z = depth_m.reshape(-1)[valid].astype(np.float32, copy=False)
    h = []
    for r in range(3):
        # A[r] . [u, v, 1] on the whole grid (one broadcast add), then gathered at valid pixels.
        g = (np.float32(A[r, 0]) * u + np.float32(A[r, 2])) + np.float32(A[r, 1]) * v
        hr = g.reshape(-1)[valid]
        hr *= z
        if b[r] != 0.0:
            hr += np.float32(b[r])
        h.append(hr)
    zc = h[2]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv_z = np.float32(1.0) / zc
        uc = h[0]
        uc *= inv_z
        vc = h[1]
        vc *= inv_z
        # Keep points in front of the colour camera whose footprint touches the image
        # (NaN compares false, so degenerate points drop out before any integer cast).
        lo, hi = (-1.0, 0.0) if splat else (-0.5, -0.5)
        keep = (zc > 0) & (uc >= lo) & (uc < wc + hi) & (vc >= lo) & (vc < hc + hi)
    uc, vc, zc = uc[keep], vc[keep], zc[keep]

    if splat:
        # z-buffer padded by one pixel on each side so that u0, u0 + 1 (u0 >= -1) never wrap.
        wp = wc + 2
        zbuf = np.full((hc + 2) * wp, np.inf, dtype=np.float32)
        lin = (np.floor(vc).astype(np.int32) + 1) * np.int32(wp) + (np.floor(uc).astype(np.int32) + 1)
        for offset in (0, 1, wp, wp + 1):
            np.minimum.at(zbuf, lin + np.int32(offset), zc)
        zbuf = zbuf.reshape(hc + 2, wp)[1:-1, 1:-1].copy()
    else:
        lin = np.rint(vc).astype(np.int32) * np.int32(wc) + np.rint(uc).astype(np.int32)
        zbuf = np.full(hc * wc, np.inf, dtype=np.float32)
        np.minimum.at(zbuf, lin, zc)
        zbuf = zbuf.reshape(hc, wc)
    zbuf[zbuf == np.inf] = 0.0
    return zbuf
