"""Recipe validation: every error names FILE:LINE and nothing is written."""
from __future__ import annotations

import pytest

from conftest import RECIPES, write_recipe
from video_pipeline.errors import RecipeError
from video_pipeline.graph import CycleError, closure, topological_order
from video_pipeline.recipe import load_recipe


def test_quickstart_resolves_defaults_in_dependency_order():
    recipe = load_recipe(RECIPES / "quickstart.yaml")
    assert list(recipe.experts) == ["rgb", "hsv", "edges", "flow"]
    assert recipe.experts["edges"].params["low"] == 100
    assert recipe.shard_frames == 16
    assert recipe.experts["rgb"].output.kind == "image"
    assert len(recipe.sha256) == 64


def test_dependency_order_follows_deps_not_file_order(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", """
experts:
  b: {type: color/hsv}
  c: {type: edges/canny, deps: []}
  a: {type: color/rgb}
""")
    assert list(load_recipe(path).experts) == ["b", "c", "a"]
    assert topological_order({"x": ["y"], "y": ["z"], "z": []}) == ["z", "y", "x"]
    assert closure(["x"], {"x": ["y"], "y": [], "z": []}) == {"x", "y"}
    with pytest.raises(CycleError) as err:
        topological_order({"x": ["y"], "y": ["x"]})
    assert err.value.cycle == ["x", "y", "x"]


BAD = [
    ("unknown top key", "experts: {rgb: {type: color/rgb}}\nframes: 3\n", 2, "unknown key 'frames'"),
    ("unknown expert key", "experts:\n  rgb:\n    type: color/rgb\n    weigths: x\n", 4, "unknown key 'weigths'"),
    ("unknown type", "experts:\n  rgb: {type: color/rbg}\n", 2, "did you mean 'color/rgb'"),
    ("missing type", "experts:\n  rgb: {params: {}}\n", 2, "missing 'type'"),
    ("missing dep", "experts:\n  e: {type: color/hsv, deps: [nope]}\n", 2, "'nope' is not an expert"),
    ("cycle", "experts:\n  a: {type: color/rgb, deps: [b]}\n  b: {type: color/rgb, deps: [a]}\n", 2, "cycle"),
    ("wrong param type", "experts:\n  e:\n    type: edges/canny\n    params: {low: fast}\n", 4, "must be an integer"),
    ("unknown param", "experts:\n  e:\n    type: edges/canny\n    params:\n      lo: 1\n", 5, "unknown parameter 'lo'"),
    ("bad yaml", "experts:\n  rgb: {type: color/rgb\n", 3, "invalid YAML"),
    ("not a mapping", "- 1\n- 2\n", 1, "must be a mapping"),
    ("empty", "", 1, "empty"),
    ("bad resolution", "resolution: [0, 10]\nexperts: {rgb: {type: color/rgb}}\n", 1, "resolution"),
    ("bad shard_frames", "shard_frames: 1e9\nexperts: {rgb: {type: color/rgb}}\n", 1, "shard_frames"),
    ("bad batch size", "experts:\n  rgb: {type: color/rgb, batch_size: -1}\n", 2, "batch_size"),
    ("bad device", "device: tpu\nexperts: {rgb: {type: color/rgb}}\n", 1, "device"),
    ("duplicate key", "experts:\n  rgb: {type: color/rgb}\n  rgb: {type: color/hsv}\n", 3, "duplicate key"),
    ("python object tag", "experts: !!python/object/apply:os.system [echo hi]\n", 1, "invalid YAML"),
    ("reserved name", "experts:\n  next_frames: {type: color/rgb}\n", 2, "invalid expert name"),
    ("too many deps", "experts:\n  a: {type: color/rgb}\n  b: {type: color/hsv, deps: [a]}\n", 3, "needs exactly 0"),
]


@pytest.mark.parametrize("text,line,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_errors_name_file_and_line(tmp_path, text, line, needle):
    path = write_recipe(tmp_path / "bad.yaml", text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert needle in msg
    assert "\n" not in msg


def test_non_utf8_is_reported_with_its_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"experts:\n  rgb: {type: color/rgb}\n# caf\xe9\n")
    with pytest.raises(RecipeError, match=r"latin1.yaml:3: not UTF-8"):
        load_recipe(path)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
