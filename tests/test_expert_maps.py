"""map/*: class tables, votes, binary masks, thresholds and safe landing on hand-made maps."""
import json

import numpy as np
import pytest

from experts.maps import (UNKNOWN, MapBinary, MapClasses, MapSafeLanding, MapThreshold, MapVote,
                          class_labels, combine_masks, load_table, majority_vote, safe_landing,
                          shipped_tables)
from video_pipeline.expert import OutputSpec
from video_pipeline.registry import get_expert

DRONESCAPES = ("land", "forest", "residential", "road", "little-objects", "water", "sky", "hill")
DRONESCAPES_PALETTE = ((0, 255, 0), (0, 127, 0), (255, 255, 0), (255, 255, 255), (255, 0, 0),
                       (0, 0, 255), (0, 255, 255), (127, 127, 63))
FRAMES = np.zeros((1, 2, 3, 3), np.uint8)  # map experts ignore the frames


def semantic_spec(classes) -> OutputSpec:
    palette = [(i, i, i) for i in range(len(classes))]
    return OutputSpec(channels=1, kind="semantic", classes=tuple(classes), palette=palette)


def labels(rows) -> np.ndarray:
    """[1,H,W,1] uint8 label map from nested lists."""
    return np.array(rows, dtype=np.uint8)[None, ..., None]


def run(expert, specs: dict, arrays: dict) -> np.ndarray:
    """What the runner does with a map expert: output() from the specs, bind, call."""
    expert.output(specs)
    expert.bind("out", deps=tuple(specs))
    return expert(FRAMES, arrays)


# ---------------------------------------------------------------- tables

@pytest.mark.parametrize("name, n_source", [("mapillary-to-dronescapes", 65), ("coco-to-dronescapes", 133)])
def test_shipped_tables_are_complete_and_target_the_dronescapes_classes(name, n_source):
    assert name in shipped_tables()
    table = load_table(name)
    assert len(table.source_classes) == len(set(table.source_classes)) == n_source
    assert table.target_classes == DRONESCAPES and table.target_palette == DRONESCAPES_PALETTE
    assert set(table.mapping) == set(table.source_classes)
    assert set(table.mapping.values()) <= set(DRONESCAPES)
    lut = table.lut()
    assert (lut[:n_source] < len(DRONESCAPES)).all() and (lut[n_source:] == UNKNOWN).all()


@pytest.mark.parametrize("name, expected", [
    ("mapillary-to-dronescapes", {"Sky": "sky", "Road": "road", "Building": "residential",
                                  "Vegetation": "forest", "Water": "water", "Terrain": "land",
                                  "Mountain": "hill", "Car": "little-objects", "Person": "little-objects",
                                  "Sidewalk": "road", "Pole": "residential", "Snow": "land"}),
    ("coco-to-dronescapes", {"sky-other-merged": "sky", "road": "road", "house": "residential",
                             "building-other-merged": "residential", "tree-merged": "forest",
                             "river": "water", "sea": "water", "grass-merged": "land",
                             "mountain-merged": "hill", "car": "little-objects", "railroad": "road",
                             "chair": "residential"}),
])
def test_known_mappings(name, expected):
    mapping = load_table(name).mapping
    assert {k: mapping[k] for k in expected} == expected


def test_first_and_last_class_ids_of_the_source_lists():
    mapillary, coco = load_table("mapillary-to-dronescapes"), load_table("coco-to-dronescapes")
    assert (mapillary.source_classes[0], mapillary.source_classes[27], mapillary.source_classes[-1]) == \
        ("Bird", "Sky", "Ego Vehicle")
    assert (coco.source_classes[0], coco.source_classes[80], coco.source_classes[-1]) == \
        ("person", "banner", "rug-merged")


def test_a_table_from_a_path_and_its_errors(tmp_path):
    doc = {"source_classes": ["a", "b", "c"], "target_classes": ["x", "y"],
           "target_palette": [[1, 2, 3], [4, 5, 6]], "mapping": {"a": "y", "b": "x", "c": "y"}}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(doc))
    table = load_table(str(path))
    assert table.name == "mine" and list(table.lut()[:4]) == [1, 0, 1, UNKNOWN]

    with pytest.raises(ValueError, match="not found: use one of .*mapillary-to-dronescapes"):
        load_table("no-such-table")
    doc["mapping"] = {"a": "y", "b": "x"}
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="no target for source class.* c"):
        load_table(str(path))
    doc["mapping"] = {"a": "y", "b": "x", "c": "z"}
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="targets z are not target_classes"):
        load_table(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        load_table(str(path))


# ---------------------------------------------------------------- map/classes

def test_map_classes_remaps_ids_and_keeps_unknown():
    table = load_table("mapillary-to-dronescapes")
    spec = semantic_spec(table.source_classes)
    ids = {name: i for i, name in enumerate(table.source_classes)}
    src = labels([[ids["Sky"], ids["Road"], ids["Building"]], [ids["Vegetation"], ids["Water"], UNKNOWN]])
    expert = MapClasses(table="mapillary-to-dronescapes")
    out = run(expert, {"m2f": spec}, {"m2f": src})
    assert out.dtype == np.uint8 and out.shape == (1, 2, 3, 1)
    d = {name: i for i, name in enumerate(DRONESCAPES)}
    assert out[0, ..., 0].tolist() == [[d["sky"], d["road"], d["residential"]],
                                       [d["forest"], d["water"], UNKNOWN]]
    declared = expert.output({"m2f": spec})
    assert declared.classes == DRONESCAPES and declared.palette == DRONESCAPES_PALETTE

    # Probabilities are reduced by argmax first.
    probs = np.zeros((1, 1, 2, len(ids)), np.float16)
    probs[0, 0, 0, ids["Water"]] = 0.9
    probs[0, 0, 1, ids["Mountain"]] = 0.6
    assert expert(FRAMES, {"m2f": probs})[0, 0, :, 0].tolist() == [d["water"], d["hill"]]


def test_map_classes_refuses_a_dependency_with_other_classes():
    expert = MapClasses(table="coco-to-dronescapes")
    with pytest.raises(ValueError, match="'m2f' has 8 classes, table 'coco-to-dronescapes' maps 133: "
                                         "class 0 is 'land' there and 'person' in the table"):
        expert.output({"m2f": semantic_spec(DRONESCAPES)})
    with pytest.raises(ValueError, match="not found"):
        MapClasses(table="coco")


# ---------------------------------------------------------------- map/vote

def test_majority_vote_with_ties_and_unknowns():
    a = np.array([[1, 3, UNKNOWN, 5, 2, UNKNOWN]], np.uint8)
    b = np.array([[2, 1, 4, 5, 7, UNKNOWN]], np.uint8)
    c = np.array([[2, 2, UNKNOWN, 0, 7, UNKNOWN]], np.uint8)
    # 2 wins 2:1; three-way tie -> lowest (1); only one voter; 5 wins 2:1; 7 wins; nobody votes.
    assert majority_vote([a, b, c]).tolist() == [[2, 1, 4, 5, 7, UNKNOWN]]
    # Two voters disagreeing: tie -> lowest id.
    assert majority_vote([b, a]).tolist() == [[1, 1, 4, 5, 2, UNKNOWN]]


def test_map_vote_expert_checks_classes_and_votes():
    spec = semantic_spec(DRONESCAPES)
    expert = MapVote()
    maps = {"s1": labels([[0, 1], [6, 6]]), "s2": labels([[3, 1], [5, 2]]), "s3": labels([[3, 4], [5, 7]])}
    out = run(expert, {n: spec for n in maps}, maps)
    assert out[0, ..., 0].tolist() == [[3, 1], [5, 2]]
    assert expert.output({n: spec for n in maps}).classes == DRONESCAPES
    with pytest.raises(ValueError, match="'s1' and 's2' have different classes"):
        expert.output({"s1": spec, "s2": semantic_spec(("a", "b"))})


# ---------------------------------------------------------------- map/binary

def test_combine_masks_majority_is_strictly_more_than_half():
    t, f = np.array([True]), np.array([False])
    assert not combine_masks([t, f], "majority")[0]      # 1 of 2 is not a majority
    assert combine_masks([t, t], "majority")[0]
    assert combine_masks([t, f, t], "majority")[0]       # 2 of 3
    assert not combine_masks([t, f, f], "majority")[0]
    assert not combine_masks([t, t, f, f], "majority")[0]
    assert combine_masks([t, f], "any")[0] and not combine_masks([t, f], "all")[0]
    assert combine_masks([t, t, t], "all")[0]


@pytest.mark.parametrize("mode, expected", [("majority", [[1, 0, 0, 0]]), ("all", [[1, 0, 0, 0]]),
                                             ("any", [[1, 1, 1, 0]])])
def test_map_binary_over_two_semantic_experts(mode, expected):
    spec = semantic_spec(DRONESCAPES)
    # road=3, residential=2, land=0: pixel 0 both road; 1 one road; 2 one residential; 3 none.
    maps = {"a": labels([[3, 3, 0, 0]]), "b": labels([[3, 0, 2, 0]])}
    out = run(MapBinary(classes=["road", "residential"], mode=mode), {n: spec for n in maps}, maps)
    assert out.dtype == np.uint8 and out[0, ..., 0].tolist() == expected


def test_map_binary_with_one_class_list_per_dependency():
    mapillary = load_table("mapillary-to-dronescapes").source_classes
    coco = load_table("coco-to-dronescapes").source_classes
    specs = {"m2f_mapillary": semantic_spec(mapillary), "m2f_coco": semantic_spec(coco)}
    maps = {"m2f_mapillary": labels([[mapillary.index("Building"), mapillary.index("Building"), 0]]),
            "m2f_coco": labels([[coco.index("house"), coco.index("person"), coco.index("roof")]])}
    expert = MapBinary(classes=[["Building", "Wall"], ["building-other-merged", "house", "roof"]], mode="all")
    assert run(expert, specs, maps)[0, ..., 0].tolist() == [[1, 0, 0]]
    expert = MapBinary(classes=[["Building"], ["house", "roof"]], mode="any")
    assert run(expert, specs, maps)[0, ..., 0].tolist() == [[1, 1, 1]]


def test_map_binary_names_an_unknown_class_and_the_available_ones():
    expert = MapBinary(classes=["road", "roads"])
    with pytest.raises(ValueError) as err:
        expert.output({"semantic": semantic_spec(DRONESCAPES)})
    message = str(err.value)
    assert "'roads'" in message and "'semantic'" in message and ", ".join(DRONESCAPES) in message
    with pytest.raises(ValueError, match="2 lists for 1 dependencies"):
        MapBinary(classes=[["road"], ["land"]]).output({"semantic": semantic_spec(DRONESCAPES)})
    with pytest.raises(ValueError, match="non-empty list"):
        MapBinary(classes=[])
    with pytest.raises(ValueError, match="non-empty list"):
        MapBinary(classes=["road", ["land"]])


# ---------------------------------------------------------------- map/threshold

def test_threshold_alone_and_under_a_mask():
    depth = np.array([0.1, 0.3, 0.5, np.nan], np.float16).reshape(1, 1, 4, 1)
    depth_spec = OutputSpec(channels=1, kind="depth", value_range=(0, 1), quantity="relative_depth")

    def threshold_row(op: str) -> list[int]:
        out = run(MapThreshold(value=0.3, op=op, quantity="relative_depth"), {"depth": depth_spec},
                  {"depth": depth})
        assert out.dtype == np.uint8 and out.shape == (1, 1, 4, 1)
        return out[0, 0, :, 0].tolist()

    # NaN (no depth) is neither near nor far.
    assert threshold_row("le") == [1, 1, 0, 0] and threshold_row("gt") == [0, 0, 1, 0]
    assert threshold_row("lt") == [1, 0, 0, 0] and threshold_row("ge") == [0, 1, 1, 0]

    buildings = np.array([1, 0, 1, 1], np.uint8).reshape(1, 1, 4, 1)
    specs = {"buildings": OutputSpec(channels=1, kind="binary"), "depth": depth_spec}
    nearby = run(MapThreshold(value=0.3, quantity="relative_depth"), specs, {"buildings": buildings, "depth": depth})
    assert nearby[0, 0, :, 0].tolist() == [1, 0, 0, 0]


def test_threshold_names_the_depth_quantity():
    inverse = OutputSpec(channels=1, kind="depth", value_range=(0, 1), quantity="inverse_depth")
    # A threshold on a depth must say which quantity its value is in, and that must be the depth's.
    with pytest.raises(ValueError, match="'disp' holds inverse_depth: name it in params.quantity"):
        MapThreshold(value=0.3).output({"disp": inverse})
    with pytest.raises(ValueError, match="'disp' holds inverse_depth.*got relative_depth"):
        MapThreshold(value=0.3, quantity="relative_depth").output({"disp": inverse})
    with pytest.raises(ValueError, match="'d' does not say which depth quantity"):
        MapThreshold(value=0.3, quantity="relative_depth").output({"d": OutputSpec(channels=1, kind="depth")})
    with pytest.raises(ValueError, match="params.quantity is for depth dependencies"):
        MapThreshold(value=0.3, quantity="relative_depth").output(
            {"f": OutputSpec(channels=1, kind="features")})
    with pytest.raises(ValueError, match="quantity must be one of"):
        MapThreshold(value=0.3, quantity="depth")
    assert MapThreshold(value=0.7, op="ge", quantity="inverse_depth").output({"disp": inverse}).kind == "binary"


def test_threshold_refuses_wrong_dependencies():
    depth = OutputSpec(channels=1, kind="depth")
    with pytest.raises(ValueError, match="mask: 'depth2' is depth, not binary"):
        MapThreshold(value=1.0).output({"depth2": depth, "depth": depth})
    with pytest.raises(ValueError, match="'semantic' .* not a 1-channel numeric map"):
        MapThreshold(value=1.0).output({"semantic": semantic_spec(DRONESCAPES)})
    with pytest.raises(ValueError, match="got 3 dependencies"):
        MapThreshold(value=1.0).output({"a": depth, "b": depth, "c": depth})
    with pytest.raises(ValueError, match="op must be"):
        MapThreshold(value=1.0, op="eq")


# ---------------------------------------------------------------- map/safe-landing

def encoded(n) -> np.ndarray:
    return (np.asarray(n, np.float32) + 1) / 2


def test_safe_landing_rule_on_encoded_normals():
    normals = np.stack([
        encoded([0.0, 1.0, 0.0]),     # level ground seen forward: safe
        encoded([0.0, 0.5, 0.2]),     # y = 0.75 in [0,1]: not > 0.8
        encoded([0.3, 0.95, 0.0]),    # y ok, x + z = 0.65 + 0.5 = 1.15 < 1.2: safe
        encoded([0.3, 0.9, 0.3]),     # x + z = 1.3: too tilted
        encoded([0.0, 1.0, 0.0]),     # level but too far
        [0.5, 0.5, 0.5],              # no normal
    ]).reshape(1, 1, 6, 3).astype(np.float16)
    depth = np.array([0.2, 0.2, 0.9, 0.2, 0.95, 0.2], np.float16).reshape(1, 1, 6, 1)
    assert safe_landing(normals, depth)[0, 0].tolist() == [True, False, True, False, False, False]
    # Thresholds are parameters; max_depth None drops the depth test.
    assert safe_landing(normals, depth, max_depth=None, min_vertical=0.7)[0, 0].tolist() == \
        [True, True, True, False, True, False]


def test_safe_landing_expert_with_and_without_semantics():
    n_spec = OutputSpec(channels=3, kind="normals", value_range=(0, 1))
    d_spec = OutputSpec(channels=1, kind="depth", value_range=(0, 1), quantity="relative_depth")
    normals = np.broadcast_to(encoded([0.0, 1.0, 0.0]), (1, 1, 4, 3)).astype(np.float16)
    depth = np.full((1, 1, 4, 1), 0.5, np.float16)
    plain = run(MapSafeLanding(), {"normals": n_spec, "depth": d_spec}, {"normals": normals, "depth": depth})
    assert plain.dtype == np.uint8 and plain[0, 0, :, 0].tolist() == [1, 1, 1, 1]

    semantic = labels([[0, 3, 2, 5]])  # land, road, residential, water
    specs = {"normals": n_spec, "depth": d_spec, "semantic": semantic_spec(DRONESCAPES)}
    arrays = {"normals": normals, "depth": depth, "semantic": semantic}
    assert run(MapSafeLanding(), specs, arrays)[0, 0, :, 0].tolist() == [1, 1, 0, 0]
    assert run(MapSafeLanding(safe_classes=["water"]), specs, arrays)[0, 0, :, 0].tolist() == [0, 0, 0, 1]


def test_safe_landing_refuses_wrong_dependencies():
    n_spec = OutputSpec(channels=3, kind="normals")
    d_spec = OutputSpec(channels=1, kind="depth", quantity="relative_depth")
    with pytest.raises(ValueError, match=r"takes \[normals, depth\].*got depth \(depth\), normals"):
        MapSafeLanding().output({"depth": d_spec, "normals": n_spec})
    with pytest.raises(ValueError, match="class 'land' is not a class of dependency 's'"):
        MapSafeLanding().output({"normals": n_spec, "depth": d_spec, "s": semantic_spec(("a", "b"))})
    with pytest.raises(ValueError, match="vertical_axis"):
        MapSafeLanding(vertical_axis="w")
    inverse = OutputSpec(channels=1, kind="depth", quantity="inverse_depth")
    with pytest.raises(ValueError, match="'disp' holds inverse depth .* set max_depth: null"):
        MapSafeLanding().output({"normals": n_spec, "disp": inverse})
    assert MapSafeLanding(max_depth=None).output({"normals": n_spec, "disp": inverse}).kind == "binary"
    with pytest.raises(ValueError, match="'d' does not say which depth quantity"):
        MapSafeLanding().output({"normals": n_spec, "d": OutputSpec(channels=1, kind="depth")})


def test_map_experts_are_registered_with_their_dependency_rules():
    for type_name, cls, n_deps in [("map/classes", MapClasses, 1), ("map/vote", MapVote, None),
                                   ("map/binary", MapBinary, None), ("map/threshold", MapThreshold, None),
                                   ("map/safe-landing", MapSafeLanding, None)]:
        assert get_expert(type_name) is cls and cls.n_deps == n_deps


def test_class_labels_of_ids_and_probabilities():
    ids = labels([[1, 2]])
    assert class_labels(ids).tolist() == [[[1, 2]]]
    probs = np.array([[[[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]]], np.float16)
    assert class_labels(probs).tolist() == [[[1, 0]]]
