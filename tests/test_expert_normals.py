"""normals/svd: plane fits on analytic depth maps with known normals, and the expert around them."""
import math

import numpy as np
import pytest

from experts.maps import safe_landing
from experts.normals import CAMERAS, SvdNormals, camera_rays, focal_lengths, normals_from_depth
from video_pipeline.expert import OutputSpec
from video_pipeline.registry import get_expert

H, W, FOV = 90, 120, 75.0


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def plane_depth(normal, offset: float, h: int = H, w: int = W, fov: float = FOV, **camera) -> np.ndarray:
    """Depth [h,w] of the plane {P : normal . P = offset}; NaN where the ray misses it (behind)."""
    u, v = camera_rays(h, w, fov, **camera)
    with np.errstate(divide="ignore"):
        depth = offset / (normal[0] * u + normal[1] * v + normal[2])
    depth[~(depth > 0)] = np.nan
    return depth


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between unit vectors [...,3] (b broadcast)."""
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


def test_fronto_parallel_plane_faces_along_the_optical_axis_everywhere():
    normals = normals_from_depth(np.full((H, W), 4.0), FOV, 11)
    assert normals.shape == (1, H, W, 3) and normals.dtype == np.float32
    # Border windows are truncated but still lie on the plane: no border is excluded.
    assert angle_deg(normals[0], np.array([0.0, 0.0, 1.0])).max() < 0.1


@pytest.mark.parametrize("normal", [(0.3, 0.2, 1.0), (-0.6, 0.1, 0.8), (0.0, 0.8, 0.6),
                                    (0.0, -0.9, 0.45), (0.95, 0.0, 0.3)])
@pytest.mark.parametrize("window", [3, 11])
def test_tilted_planes_match_the_analytic_normal(normal, window):
    n = unit(normal)
    normals = normals_from_depth(plane_depth(n, 5.0), FOV, window)[0]
    valid = ~np.isnan(normals[..., 0])
    assert valid.mean() > 0.5  # steep planes leave the view partly (NaN there)
    # Rays within ~6 degrees of grazing the plane see depths run to infinity across one window:
    # no plane fit survives that, so those pixels are left out.
    u, v = camera_rays(H, W, FOV)
    rays = np.stack(np.broadcast_arrays(u, v, np.ones_like(u)), axis=-1)
    facing = np.abs(rays @ n) / np.linalg.norm(rays, axis=-1) > 0.1
    assert angle_deg(normals[valid & facing], n).max() < 0.5


def test_sphere_normals_are_radial():
    # A sphere of radius 3 centred 10 units ahead and a bit to the side; rays hitting it, nearest root.
    centre, radius = np.array([1.0, -0.5, 10.0]), 3.0
    u, v = camera_rays(H, W, FOV)
    rays = np.stack(np.broadcast_arrays(u, v, np.ones_like(u)), axis=-1)
    a = (rays * rays).sum(-1)
    b = (rays * centre).sum(-1)
    disc = b * b - a * ((centre * centre).sum() - radius ** 2)
    with np.errstate(invalid="ignore"):
        depth = (b - np.sqrt(disc)) / a
    depth[disc < 0] = np.nan
    # A plane fit to a curved patch is off by a fraction of the normal's turn across the window:
    # a 3-pixel window spans ~0.4 units here, ~7 degrees of the sphere.
    normals = normals_from_depth(depth, FOV, 3)[0]
    points = depth[..., None] * rays
    inward = (centre - points) / radius  # away from the camera on the visible side of the sphere
    # Only pixels whose whole window is on the sphere (no silhouette) and well inside it.
    inside = np.isfinite(depth) & (((points - centre) ** 2).sum(-1) > 0)
    facing = (inward * rays).sum(-1) / np.sqrt(a) > 0.5
    core = inside & facing
    assert core.sum() > 500
    assert angle_deg(normals[core], inward[core]).max() < 2.0
    assert np.isnan(normals[~np.isfinite(depth)]).all()


def test_matches_a_per_pixel_svd_of_the_window_points():
    rng = np.random.default_rng(3)
    h, w, window = 14, 18, 5
    yy, xx = np.mgrid[0:h, 0:w]
    depth = 6.0 + 0.05 * xx + 0.03 * yy + 0.02 * rng.standard_normal((h, w))  # a noisy slope
    ours = normals_from_depth(depth, 60.0, window)[0]
    u, v = camera_rays(h, w, 60.0)
    points = depth[..., None] * np.stack(np.broadcast_arrays(u, v, np.ones_like(u)), axis=-1)
    r = window // 2
    checked = 0
    for i in range(h):
        for j in range(w):
            win = points[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1].reshape(-1, 3)
            centred = win - win.mean(0)
            _, s, vt = np.linalg.svd(centred)
            if s[1] < 2 * s[2]:
                continue  # no clear plane: the smallest direction is not well defined
            ref = vt[2] * np.sign(vt[2] @ np.array([u[0, j], v[i, 0], 1.0]))
            assert angle_deg(ours[i, j], ref) < 0.05, (i, j)
            checked += 1
    assert checked > 0.9 * h * w


def test_scale_of_depth_does_not_matter_and_batches_are_frames():
    n = unit((0.2, 0.5, 0.8))
    depth = plane_depth(n, 2.0)
    one = normals_from_depth(depth, FOV, 7)
    batch = normals_from_depth(np.stack([depth, 1000 * depth, depth / 50]).astype(np.float32), FOV, 7)
    assert batch.shape == (3, H, W, 3)
    valid = ~np.isnan(one[0, ..., 0])
    for k in range(3):
        assert np.array_equal(np.isnan(batch[k, ..., 0]), ~valid)
        assert angle_deg(batch[k][valid], one[0][valid]).max() < 0.05


def test_missing_depth_gives_nan_there_and_the_fit_uses_the_rest():
    n = unit((0.3, -0.4, 0.87))
    depth = plane_depth(n, 3.0)
    depth[30:40, 50:70] = np.nan
    depth[60, :] = 0.0
    depth[5, 5] = np.inf
    normals = normals_from_depth(depth, FOV, 9)[0]
    missing = ~np.isfinite(depth) | (depth <= 0)
    assert np.isnan(normals[missing]).all()
    assert angle_deg(normals[~missing], n).max() < 0.5


def test_oblique_ground_is_level_for_the_dronescapes_rule_and_nadir_ground_along_z():
    # Camera 30 m above flat ground, pitched 15 degrees down: ground normal (away from the camera)
    # is world-down = (0, cos, sin) in camera axes; above the horizon there is no ground (NaN).
    pitch = math.radians(15)
    down = np.array([0.0, math.cos(pitch), math.sin(pitch)])
    expert = SvdNormals(window=11, fov_deg=FOV).bind("normals", deps=("depth",))
    expert.output({"depth": OutputSpec(channels=1, kind="depth", quantity="metric_depth")})
    depth = plane_depth(down, 30.0)
    encoded = expert(np.zeros((1, H, W, 3), np.uint8), {"depth": depth[None, ..., None] / 1000})
    assert encoded.dtype == np.float16 and encoded.shape == (1, H, W, 3)
    assert np.isfinite(encoded).all() and encoded.min() >= 0 and encoded.max() <= 1
    ground = np.isfinite(depth)
    assert np.allclose(encoded[0][~ground], 0.5)  # sky: the zero vector
    assert np.allclose(encoded[0][ground], (down + 1) / 2, atol=5e-3)
    near = np.where(ground, depth / depth[ground].max(), 1.0)[None, ..., None]
    safe = safe_landing(encoded, near, "y", max_depth=1.0)
    assert safe[0][ground].all() and not safe[0][~ground].any()

    nadir = expert(np.zeros((1, H, W, 3), np.uint8), {"depth": np.full((1, H, W, 1), 30.0, np.float16)})
    assert np.allclose(nadir[0], (0.5, 0.5, 1.0), atol=2e-3)
    level = np.ones((1, H, W, 1))
    assert not safe_landing(nadir, level * 0.5, "y").any()
    assert safe_landing(nadir, level * 0.5, "z").all()


def test_expert_inverts_inverse_depth_and_needs_its_dependency_spec():
    n = unit((0.2, 0.6, 0.77))
    depth = plane_depth(n, 4.0)
    frames = np.zeros((1, H, W, 3), np.uint8)
    expert = SvdNormals(window=5).bind("normals", deps=("disparity",))
    with pytest.raises(RuntimeError, match="output"):
        expert(frames, {"disparity": depth[None, ..., None]})
    expert.output({"disparity": OutputSpec(channels=1, kind="depth", quantity="inverse_depth")})
    disparity = np.nan_to_num(1 / depth)[None, ..., None]  # 0 where the plane is out of sight
    out = expert(frames, {"disparity": disparity})
    seen = np.isfinite(depth)
    assert np.allclose(out[0][seen], (n + 1) / 2, atol=5e-3) and np.allclose(out[0][~seen], 0.5)
    # Read as depth, the same map is no plane: the fit disagrees with the true normal.
    expert.output({"disparity": OutputSpec(channels=1, kind="depth", quantity="relative_depth")})
    wrong = expert(frames, {"disparity": disparity})
    assert np.abs(wrong[0][seen].astype(np.float32) - (n + 1) / 2).max() > 0.1


def test_expert_is_registered_and_declares_its_output():
    assert get_expert("normals/svd") is SvdNormals
    assert SvdNormals.n_deps == 1 and SvdNormals.dep_kinds == ("depth",)
    out = SvdNormals().output({"depth": OutputSpec(channels=1, kind="depth", value_range=(0, 1),
                                                   quantity="relative_depth")})
    assert (out.channels, out.kind, out.dtype, out.value_range) == (3, "normals", "float16", (0.0, 1.0))
    with pytest.raises(ValueError, match="1-channel"):
        SvdNormals().output({"flowish": OutputSpec(channels=2, kind="depth")})
    # A depth that does not say what it holds is refused, never guessed.
    with pytest.raises(ValueError, match="'mystery' does not say which depth quantity"):
        SvdNormals().output({"mystery": OutputSpec(channels=1, kind="depth")})


@pytest.mark.parametrize("params, message", [({"window": 4}, "odd"), ({"fov_deg": 180.0}, "fov_deg"),
                                             ({"fov_axis": "width"}, "fov_axis"),
                                             ({"sensor_size": [3840]}, "sensor_size"),
                                             ({"principal_point": "middle"}, "principal_point")])
def test_the_pure_function_refuses_bad_parameters(params, message):
    # (the expert's refusals are checked by the shared battery, tests/test_builtin_experts.py)
    with pytest.raises(ValueError, match=message):
        normals_from_depth(np.ones((8, 8)), **params)


def test_field_of_view_conventions():
    t = math.tan(math.radians(30))  # a 60 degree FOV
    assert np.allclose(focal_lengths(300, 400, 60, "horizontal"), (200 / t, 200 / t))
    assert np.allclose(focal_lengths(300, 400, 60, "vertical"), (150 / t, 150 / t))
    assert np.allclose(focal_lengths(300, 400, 60, "diagonal"), (250 / t, 250 / t))
    # The FOV measured on a 3840x2160 sensor, the frame its resized picture: a 540x960 frame keeps
    # the sensor's square pixels, a 4:3 frame of it (squeezed) gets fx != fy.
    fx, fy = focal_lengths(540, 960, 75, "diagonal", (3840, 2160))
    assert np.isclose(fx, fy) and np.isclose(fx, math.hypot(960, 540) / 2 / math.tan(math.radians(37.5)))
    fx, fy = focal_lengths(720, 960, 75, "diagonal", (3840, 2160))
    assert np.isclose(fx * 3840 / 960, fy * 2160 / 720) and not np.isclose(fx, fy)  # one sensor focal


@pytest.mark.parametrize("camera", [{"fov_axis": "vertical"}, {"fov_axis": "diagonal", "sensor_size": (3840, 2160)},
                                    {"fov_axis": "diagonal", "sensor_size": (4000, 3000),
                                     "principal_point": "corner"}])
def test_tilted_plane_under_every_fov_convention(camera):
    n = unit((0.25, 0.55, 0.8))
    normals = normals_from_depth(plane_depth(n, 5.0, **camera), FOV, 7, **camera)[0]
    valid = ~np.isnan(normals[..., 0])
    assert valid.mean() > 0.9 and angle_deg(normals[valid], n).max() < 0.1
    # the same depth read with the horizontal default is another camera: the normals differ
    other = normals_from_depth(plane_depth(n, 5.0, **camera), FOV, 7)[0]
    assert np.nanmedian(angle_deg(other, n)) > 0.5


def test_named_camera_and_its_clashes():
    expert = SvdNormals(camera="dronescapes")
    assert (expert.fov_deg, expert.fov_axis, expert.sensor_size, expert.principal_point) == CAMERAS["dronescapes"]
    default = SvdNormals()
    assert (default.fov_deg, default.fov_axis, default.sensor_size, default.principal_point) == \
        (75.0, "horizontal", None, "centre")
    with pytest.raises(ValueError, match="camera 'dronescapes' sets the field of view: remove fov_deg"):
        SvdNormals(camera="dronescapes", fov_deg=60.0)
    with pytest.raises(ValueError, match="camera must be one of dronescapes"):
        SvdNormals(camera="gopro")


def test_agrees_with_vre_normals_depth_svd(vre_reference):
    """VRE's normals/depth-svd with the dataset's parameters on the same depth: median angle < 0.1 deg."""
    inputs, theirs = vre_reference
    depth = inputs["depth_marigold"]
    expert = SvdNormals(camera="dronescapes").bind("normals", deps=("depth",))
    expert.output({"depth": OutputSpec(channels=1, kind="depth", quantity="relative_depth")})
    ours = expert(inputs["frames"], {"depth": depth}).astype(np.float32)
    a, b = ours * 2 - 1, theirs["normals/depth-svd"].astype(np.float32) * 2 - 1
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    angles = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    assert np.median(angles) < 0.1, np.median(angles)
