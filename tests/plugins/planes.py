"""Test plugin: one tilted plane seen by a pinhole camera, as depth and as inverse depth.

`test/plane-depth` writes its depth (relative_depth: 0.05 of the distance along the optical axis),
`test/plane-disparity` its inverse depth (inverse_depth: 2 / distance). Both see the plane
{P : n . P = 5} with n = normalised (0.2, 0.6, 0.77), through the horizontal `fov_deg`.
"""
from __future__ import annotations

import numpy as np

from experts.normals import camera_rays
from video_pipeline import Expert, OutputSpec, register_expert

PLANE_NORMAL = np.array([0.2, 0.6, 0.77]) / np.linalg.norm([0.2, 0.6, 0.77])


def plane_distance(h: int, w: int, fov_deg: float) -> np.ndarray:
    """float64 [h, w] distance along the optical axis to the plane (inf where the ray misses it)."""
    u, v = camera_rays(h, w, fov_deg)
    with np.errstate(divide="ignore"):
        depth = 5.0 / (PLANE_NORMAL[0] * u + PLANE_NORMAL[1] * v + PLANE_NORMAL[2])
    return np.where(depth > 0, depth, np.inf)


@register_expert("test/plane-depth")
class PlaneDepth(Expert):
    """Relative depth of the plane: float32 [N, H, W, 1]."""

    def __init__(self, fov_deg: float = 75.0):
        self.fov_deg = fov_deg

    def output(self, deps):
        return OutputSpec(channels=1, kind="depth", dtype="float32", quantity="relative_depth")

    def __call__(self, frames, deps):
        n, h, w = frames.shape[:3]
        depth = np.nan_to_num(0.05 * plane_distance(h, w, self.fov_deg), posinf=1e4)
        return np.broadcast_to(depth[None, ..., None], (n, h, w, 1)).astype(np.float32)


@register_expert("test/plane-disparity")
class PlaneDisparity(PlaneDepth):
    """Inverse depth of the plane: float32 [N, H, W, 1], 0 where the plane is out of sight."""

    def output(self, deps):
        return OutputSpec(channels=1, kind="depth", dtype="float32", quantity="inverse_depth")

    def __call__(self, frames, deps):
        n, h, w = frames.shape[:3]
        disparity = 2.0 / plane_distance(h, w, self.fov_deg)
        return np.broadcast_to(disparity[None, ..., None], (n, h, w, 1)).astype(np.float32)
