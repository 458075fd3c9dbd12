"""The depth-quantity contract: producers declare what their numbers are, consumers read it.

Every depth producer declares a quantity (the shared battery checks each registered expert); here
every consumer meets every quantity and either reads it right or refuses in one line naming the
dependency, and a tilted plane seen as depth and as inverse depth gives the same normals through
the real runner and store.
"""
from __future__ import annotations

import numpy as np
import pytest
import zarr

from conftest import REPO, write_recipe
from experts.maps import MapSafeLanding, MapThreshold
from experts.normals import SvdNormals
from video_pipeline.expert import OutputSpec
from video_pipeline.preview import colorize
from video_pipeline.quantities import INVERSE_DEPTH, QUANTITIES, as_depth
from video_pipeline.recipe import load_recipe
from video_pipeline.runner import RunOptions, run
from video_pipeline.synth import make_clip

NORMALS = OutputSpec(channels=3, kind="normals", value_range=(0.0, 1.0))


def depth_spec(quantity: str | None) -> OutputSpec:
    return OutputSpec(channels=1, kind="depth", quantity=quantity)


def test_the_spec_carries_the_quantity_into_the_attrs_and_checks_it():
    assert depth_spec("metric_depth").to_attrs()["quantity"] == "metric_depth"
    assert "quantity" not in OutputSpec(channels=3, kind="image").to_attrs()
    with pytest.raises(ValueError, match="quantity must be one of metric_depth, relative_depth, inverse_depth"):
        depth_spec("disparity")
    with pytest.raises(ValueError, match="quantity is for depth outputs, not kind 'features'"):
        OutputSpec(channels=1, kind="features", quantity="relative_depth")


@pytest.mark.parametrize("quantity", [*QUANTITIES, None])
def test_every_consumer_reads_every_quantity_or_refuses_naming_the_dependency(quantity):
    dep = depth_spec(quantity)
    unknown = "'d' does not say which depth quantity it holds"
    # normals/svd: any declared quantity (inverse depth is inverted), never an undeclared one
    if quantity is None:
        with pytest.raises(ValueError, match=unknown):
            SvdNormals().output({"d": dep})
    else:
        assert SvdNormals().output({"d": dep}).kind == "normals"
    # map/threshold: only in the quantity the recipe names
    for named in QUANTITIES:
        if quantity is not None and named == quantity:
            assert MapThreshold(value=0.5, quantity=named).output({"d": dep}).kind == "binary"
        else:
            with pytest.raises(ValueError, match=unknown if quantity is None else f"'d' holds {quantity}"):
                MapThreshold(value=0.5, quantity=named).output({"d": dep})
    # map/safe-landing: a depth bound only on quantities that grow with distance
    if quantity in ("metric_depth", "relative_depth"):
        assert MapSafeLanding(max_depth=0.9).output({"n": NORMALS, "d": dep}).kind == "binary"
    else:
        with pytest.raises(ValueError, match=unknown if quantity is None else "'d' holds inverse depth"):
            MapSafeLanding(max_depth=0.9).output({"n": NORMALS, "d": dep})
    assert MapSafeLanding(max_depth=None).output({"n": NORMALS, "d": dep}).kind == "binary"


@pytest.mark.parametrize("quantity", list(QUANTITIES))
def test_previews_draw_near_bright_whatever_the_quantity(quantity):
    distance = np.linspace(1.0, 10.0, 64, dtype=np.float32).reshape(8, 8, 1)
    values = 1.0 / distance if quantity == INVERSE_DEPTH else distance
    rgb = colorize(values, {"kind": "depth", "quantity": quantity}).astype(int).sum(-1)
    assert rgb[0, 0] > rgb[-1, -1]  # the nearest pixel is brighter than the farthest
    np.testing.assert_allclose(as_depth(values, quantity), distance, rtol=1e-5)  # grows with distance


def test_tilted_plane_normals_agree_from_depth_and_inverse_depth(tmp_path):
    recipe = write_recipe(tmp_path / "planes.yaml", f"""
plugins: [{REPO / 'tests' / 'plugins' / 'planes.py'}]
experts:
  depth: {{type: test/plane-depth}}
  disparity: {{type: test/plane-disparity}}
  normals_from_depth: {{type: normals/svd, deps: [depth], params: {{window: 5}}}}
  normals_from_disparity: {{type: normals/svd, deps: [disparity], params: {{window: 5}}}}
""")
    clip = make_clip(tmp_path / "clip.mp4", n_frames=2, size=(48, 64))
    run(load_recipe(recipe), clip, tmp_path / "out.zarr", RunOptions(device="cpu", progress=False))
    root = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert root["depth"].attrs["quantity"] == "relative_depth"
    assert root["disparity"].attrs["quantity"] == "inverse_depth"
    from_depth = root["normals_from_depth"][:].astype(np.float32)
    from_disparity = root["normals_from_disparity"][:].astype(np.float32)
    plane = np.array([0.2, 0.6, 0.77]) / np.linalg.norm([0.2, 0.6, 0.77])
    seen = np.abs(from_depth - 0.5).sum(-1) > 0.1
    assert seen.mean() > 0.9
    assert np.abs(from_depth[seen] - (plane + 1) / 2).max() < 5e-3
    np.testing.assert_allclose(from_disparity, from_depth, atol=2e-3)
