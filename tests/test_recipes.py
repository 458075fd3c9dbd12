"""The shipped recipes: they validate, and the offline one runs end to end on the real drone video."""
from __future__ import annotations

import numpy as np
import zarr

from conftest import RECIPES, shared_path, vre
from video_pipeline.recipe import load_recipe


def test_every_shipped_recipe_validates(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing resolvable
    for path in sorted(RECIPES.glob("*.yaml")):
        recipe = load_recipe(path)
        assert recipe.experts, path
    full = load_recipe(RECIPES / "dronescapes.yaml")
    # hub models are unresolvable offline: their outputs (and their dependents') wait for the run
    assert full.experts["semantic_mask2former_coco_47429163_0"].output is None
    assert "mapillary" in full.experts["semantic_output"].pending_error
    # depth/hf reads its depth quantity from the model's config: normals wait for the weights too
    assert full.experts["depth_dpt"].output is None and "depth_dpt" in full.experts["normals_svd(depth_dpt)"].pending_error


def test_offline_recipe_on_the_real_drone_video(tmp_path):
    video = shared_path("data", "uav_toledo.mp4")
    shared_path("weights", "phgmae_distil_safeuav_430k.ckpt")
    out = tmp_path / "toledo.zarr"
    r = vre("run", str(RECIPES / "uav-offline.yaml"), str(video), "-o", str(out), "--frames", "0..3",
            "--device", "cpu", "-q")
    assert r.returncode == 0, r.stderr
    root = zarr.open_group(str(out), mode="r")
    assert root["semantic"].shape == (47, 360, 480, 1)
    sem = root["semantic"][0:3]
    classes = root["semantic"].attrs["classes"]
    share = np.bincount(sem.ravel(), minlength=len(classes)) / sem.size
    ground = sum(share[classes.index(c)] for c in ("land", "forest", "residential", "road"))
    assert ground > 0.8, dict(zip(classes, share.round(3)))
    buildings = root["buildings"][0:3]
    np.testing.assert_array_equal(buildings[..., 0], sem[..., 0] == classes.index("residential"))
    edges = root["pidinet"][0:3].astype(np.float32)
    assert 0 <= edges.min() and edges.max() <= 1 and edges.mean() < 0.5
    assert root["_frames/flow"][:].sum() == 3
