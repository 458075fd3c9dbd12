"""Experts: maps derived from other experts' outputs (class remapping, votes, masks, safe landing).

Each map is a pure function on arrays plus a thin expert. Label maps are uint8 class ids with 255 for
"unknown" (the store's fill); a semantic dependency may also be per-class probabilities
[N,H,W,K], which are reduced to ids by argmax. Binary outputs are uint8 0/1.

Experts that need their dependencies' class names (map/binary, map/safe-landing with a semantic
dependency) learn them in `output()`, so it must be called on the instance that runs.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.quantities import check_quantity, grows_with_distance, require_quantity
from video_pipeline.registry import register_expert

TABLES_DIR = Path(__file__).resolve().parent / "tables"
UNKNOWN = 255  # label of pixels without a class (the store's fill for labels)
COMPARISONS = {"le": np.less_equal, "ge": np.greater_equal, "lt": np.less, "gt": np.greater}
AXES = {"x": 0, "y": 1, "z": 2}


# ---------------------------------------------------------------- class tables

@dataclass(frozen=True)
class ClassTable:
    """A class remapping: every source class name -> one target class name."""

    name: str
    source_classes: tuple[str, ...]
    target_classes: tuple[str, ...]
    target_palette: tuple[tuple[int, int, int], ...]
    mapping: Mapping[str, str]

    def lut(self) -> np.ndarray:
        """uint8 [256] lookup table: source id -> target id (UNKNOWN for ids past the source classes)."""
        lut = np.full(256, UNKNOWN, dtype=np.uint8)
        target_id = {name: i for i, name in enumerate(self.target_classes)}
        for i, name in enumerate(self.source_classes):
            lut[i] = target_id[self.mapping[name]]
        return lut


def shipped_tables() -> list[str]:
    """Names of the tables shipped in experts/tables/."""
    return sorted(p.stem for p in TABLES_DIR.glob("*.json"))


def load_table(table: str) -> ClassTable:
    """A shipped table by name, or a JSON file by path; ValueError saying what is wrong.

    JSON keys: `source_classes` (names in id order), `target_classes`, `target_palette` (one RGB per
    target class), `mapping` (source name -> target name, for every source class); `name` and
    `description` are optional.
    """
    path = TABLES_DIR / f"{table}.json" if table in shipped_tables() else Path(table)
    if not path.is_file():
        raise ValueError(f"class table '{table}' not found: use one of {', '.join(shipped_tables())} "
                         f"or the path of a JSON file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        source, target = tuple(doc["source_classes"]), tuple(doc["target_classes"])
        palette, mapping = tuple(tuple(c) for c in doc["target_palette"]), dict(doc["mapping"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"class table {path}: unreadable ({type(err).__name__}: {err}); it needs "
                         f"source_classes, target_classes, target_palette and mapping") from None
    if len(source) > UNKNOWN or len(target) > UNKNOWN:
        raise ValueError(f"class table {path}: at most {UNKNOWN} classes fit a uint8 label map")
    missing = [name for name in source if name not in mapping]
    if missing:
        raise ValueError(f"class table {path}: no target for source class(es) {', '.join(missing)}")
    bad = sorted({t for t in mapping.values() if t not in target})
    if bad:
        raise ValueError(f"class table {path}: mapping targets {', '.join(bad)} are not target_classes "
                         f"({', '.join(target)})")
    if len(palette) != len(target) or any(len(c) != 3 for c in palette):
        raise ValueError(f"class table {path}: target_palette needs one [R, G, B] per target class")
    return ClassTable(doc.get("name", path.stem), source, target, palette, mapping)


# ---------------------------------------------------------------- pure functions

def class_labels(semantic: np.ndarray) -> np.ndarray:
    """Class ids [N,H,W] uint8 of a semantic map: ids [N,H,W,1] as they are, probabilities
    [N,H,W,K] (K > 1) by argmax."""
    if semantic.shape[-1] == 1:
        return semantic[..., 0].astype(np.uint8, copy=False)
    return semantic.argmax(axis=-1).astype(np.uint8)


def remap_labels(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Apply a uint8 [256] lookup table to uint8 labels of any shape."""
    return lut[labels]


def majority_vote(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel most frequent class of M uint8 label maps of one shape; ties -> lowest class id.

    UNKNOWN labels do not vote; pixels where every map is UNKNOWN stay UNKNOWN. Costs M^2 passes:
    the winner is always one of the M labels at the pixel.
    """
    best = np.full(label_maps[0].shape, UNKNOWN, dtype=np.uint8)
    best_votes = np.zeros(label_maps[0].shape, dtype=np.int32)
    for candidate in label_maps:
        votes = sum((other == candidate).astype(np.int32) for other in label_maps)
        votes[candidate == UNKNOWN] = 0
        better = (votes > best_votes) | ((votes == best_votes) & (candidate < best))
        best[better], best_votes[better] = candidate[better], votes[better]
    return best


def class_mask(labels: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """bool mask of uint8 labels (any shape) whose id is one of `class_ids`."""
    lut = np.zeros(256, dtype=bool)
    lut[list(class_ids)] = True
    return lut[labels]


def combine_masks(masks: Sequence[np.ndarray], mode: str) -> np.ndarray:
    """bool masks of one shape -> bool: 'all' agree, 'any' one, 'majority' strictly more than half."""
    votes = sum(m.astype(np.int32) for m in masks)
    if mode == "all":
        return votes == len(masks)
    if mode == "any":
        return votes > 0
    if mode == "majority":
        return 2 * votes > len(masks)
    raise ValueError(f"mode must be majority, all or any, got {mode!r}")


def threshold(values: np.ndarray, op: str, value: float) -> np.ndarray:
    """bool `values <op> value` (le, ge, lt, gt); NaN compares False."""
    with np.errstate(invalid="ignore"):
        return COMPARISONS[op](values, value)


def safe_landing(normals: np.ndarray, depth: np.ndarray, vertical_axis: str = "y",
                 min_vertical: float = 0.8, max_others: float = 1.2,
                 max_depth: float | None = 0.9) -> np.ndarray:
    """bool [N,H,W] where landing looks safe: flat, level and near.

    normals: [N,H,W,3] in the (n+1)/2 encoding of normals/svd, in [0, 1].
    depth: [N,H,W,1] (or [N,H,W]) depth, same unit as `max_depth`.
    Safe: normals[vertical_axis] > min_vertical, the other two components sum < max_others, and
    depth <= max_depth (None: no depth test). The defaults are the Dronescapes rule, where the
    camera looks forward and down so level ground has its normal along image y; for a nadir camera
    use vertical_axis 'z'.
    """
    axis = AXES[vertical_axis]
    others = [i for i in range(3) if i != axis]
    n = normals.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore"):
        safe = (n[..., axis] > min_vertical) & (n[..., others[0]] + n[..., others[1]] < max_others)
        if max_depth is not None:
            safe &= (depth[..., 0] if depth.ndim == normals.ndim else depth) <= max_depth
    return safe


# ---------------------------------------------------------------- experts

def _checked_class_ids(names: Sequence[str], dep: str, spec: OutputSpec, param: str) -> list[int]:
    """Ids of `names` in a semantic dependency's classes; ValueError naming the parameter `param`
    and the unknown class."""
    unknown = [n for n in names if n not in spec.classes]
    if unknown:
        raise ValueError(f"{param}: class '{unknown[0]}' is not a class of dependency '{dep}' "
                         f"(its classes: {', '.join(spec.classes)})")
    return [spec.classes.index(n) for n in names]


@dataclass
class ClassVote:
    """Class lists over semantic dependencies and how their masks combine (map/binary, safe landing).

    `classes`: one list of class names for every dependency, or one list per dependency (for
    dependencies with different class sets, e.g. Mapillary and COCO), named by the parameter
    `param` in errors. `mode`: 'majority' (strictly more than half of the dependencies), 'all'
    or 'any'.
    """

    classes: Sequence
    mode: str
    param: str
    class_ids: list[list[int]] | None = None

    def __post_init__(self):
        flat = all(isinstance(c, str) for c in self.classes)
        if not self.classes or not (flat or all(isinstance(c, (list, tuple)) and c for c in self.classes)):
            raise ValueError(f"{self.param} must be a non-empty list of class names, or one such list per "
                             f"dependency")
        if self.mode not in ("majority", "all", "any"):
            raise ValueError(f"mode must be majority, all or any, got {self.mode!r}")
        self.per_dep = not flat

    def bind(self, deps: Sequence[tuple[str, OutputSpec]]) -> None:
        """Look the class names up in the dependencies' classes (ValueError naming what is wrong)."""
        if self.per_dep and len(self.classes) != len(deps):
            raise ValueError(f"{self.param} has {len(self.classes)} lists for {len(deps)} "
                             f"dependencies (give one list per dependency, or one list for all)")
        self.class_ids = [_checked_class_ids(self.classes[i] if self.per_dep else self.classes, name, spec,
                                             self.param) for i, (name, spec) in enumerate(deps)]

    def __call__(self, semantics: Sequence[np.ndarray]) -> np.ndarray:
        """bool [N,H,W]: the combined masks of the semantic arrays (ids or probabilities)."""
        if self.class_ids is None:
            raise RuntimeError("output() must be given the dependencies' specs first")
        masks = [class_mask(class_labels(d), ids) for d, ids in zip(semantics, self.class_ids)]
        return combine_masks(masks, self.mode)


def _binary_output() -> OutputSpec:
    return OutputSpec(channels=1, kind="binary", value_range=(0.0, 1.0))


def _ordered(expert: Expert, deps: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The dependency arrays in the recipe's order."""
    return [deps[name] for name in expert.deps]


@register_expert("map/classes")
class MapClasses(Expert):
    """Remap a semantic dependency through a class table (`table`: a shipped name or a JSON path).

    The dependency's classes must be the table's source classes, in the same order.
    """

    n_deps = 1
    dep_kinds = ("semantic",)

    def __init__(self, table: str):
        self.table = load_table(table)
        self.lut = self.table.lut()

    def output(self, deps: Mapping[str, OutputSpec]) -> OutputSpec:
        (name, spec), = deps.items()
        if spec.classes != self.table.source_classes:
            diff = next((i for i, (a, b) in enumerate(zip(spec.classes, self.table.source_classes))
                         if a != b), min(len(spec.classes), len(self.table.source_classes)))
            ours = spec.classes[diff] if diff < len(spec.classes) else "(none)"
            theirs = self.table.source_classes[diff] if diff < len(self.table.source_classes) else "(none)"
            raise ValueError(f"dependency '{name}' has {len(spec.classes)} classes, table "
                             f"'{self.table.name}' maps {len(self.table.source_classes)}: class {diff} "
                             f"is '{ours}' there and '{theirs}' in the table")
        return OutputSpec(channels=1, kind="semantic", classes=self.table.target_classes,
                          palette=self.table.target_palette)

    def __call__(self, frames: np.ndarray, deps: Mapping[str, np.ndarray]) -> np.ndarray:
        (semantic,) = _ordered(self, deps)
        return remap_labels(class_labels(semantic), self.lut)[..., None]


@register_expert("map/vote")
class MapVote(Expert):
    """Per-pixel majority vote of semantic dependencies with the same classes (ties: lowest id)."""

    n_deps = None
    dep_kinds = ("semantic",)

    def output(self, deps: Mapping[str, OutputSpec]) -> OutputSpec:
        if not deps:
            raise ValueError("map/vote needs at least one semantic dependency")
        (first, spec), *rest = deps.items()
        for name, other in rest:
            if other.classes != spec.classes:
                raise ValueError(f"dependencies '{first}' and '{name}' have different classes; "
                                 f"remap them to the same classes first (map/classes)")
        return OutputSpec(channels=1, kind="semantic", classes=spec.classes, palette=spec.palette)

    def __call__(self, frames: np.ndarray, deps: Mapping[str, np.ndarray]) -> np.ndarray:
        labels = [class_labels(d) for d in _ordered(self, deps)]
        return majority_vote(labels)[..., None]


@register_expert("map/binary")
class MapBinary(Expert):
    """1 where the semantic dependencies say one of `classes`, combined over them by `mode`.

    `classes`: one list of class names for every dependency, or one list per dependency (for
    dependencies with different class sets, e.g. Mapillary and COCO). `mode`: 'majority' (strictly
    more than half of the dependencies), 'all' or 'any'.
    """

    n_deps = None
    dep_kinds = ("semantic",)

    def __init__(self, classes: list[str] | list[list[str]],
                 mode: Literal["majority", "all", "any"] = "majority"):
        self.vote = ClassVote(classes, mode, "classes")

    def output(self, deps: Mapping[str, OutputSpec]) -> OutputSpec:
        if not deps:
            raise ValueError("map/binary needs at least one semantic dependency")
        self.vote.bind(list(deps.items()))
        return _binary_output()

    def __call__(self, frames: np.ndarray, deps: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.vote(_ordered(self, deps)).astype(np.uint8)[..., None]


@register_expert("map/threshold")
class MapThreshold(Expert):
    """1 where a 1-channel map compares true with `value` (`op`: le, ge, lt, gt).

    Dependencies: [values] or [mask, values]; with a binary mask first the result is mask AND the
    comparison (e.g. buildings nearby: [buildings, depth_marigold], op le, value 0.3, quantity
    relative_depth). A depth dependency is thresholded only in the quantity the recipe names:
    `quantity` must be the one the depth declares (a value of depth means nothing on inverse depth).
    """

    n_deps = None

    def __init__(self, value: float, op: Literal["le", "ge", "lt", "gt"] = "le", quantity: str | None = None):
        if op not in COMPARISONS:
            raise ValueError(f"op must be one of {', '.join(COMPARISONS)}, got {op!r}")
        check_quantity(quantity)
        self.value, self.op, self.quantity = value, op, quantity

    def output(self, deps: Mapping[str, OutputSpec]) -> OutputSpec:
        if len(deps) not in (1, 2):
            raise ValueError(f"map/threshold takes [values] or [mask, values], got {len(deps)} dependencies")
        *mask, (name, spec) = deps.items()
        if mask and mask[0][1].kind != "binary":
            raise ValueError(f"the first of two dependencies is the mask: '{mask[0][0]}' is "
                             f"{mask[0][1].kind}, not binary")
        if spec.channels != 1 or spec.kind in ("semantic", "binary"):
            raise ValueError(f"dependency '{name}' ({spec.kind}, {spec.channels} channels) is not a "
                             f"1-channel numeric map to threshold")
        if spec.kind == "depth":
            held = require_quantity(name, spec.quantity, "map/threshold")
            if self.quantity != held:
                raise ValueError(f"dependency '{name}' holds {held}: name it in params.quantity: {held} "
                                 f"(the threshold's value must be in that quantity), got {self.quantity}")
        elif self.quantity is not None:
            raise ValueError(f"params.quantity is for depth dependencies; '{name}' is {spec.kind}")
        return _binary_output()

    def __call__(self, frames: np.ndarray, deps: Mapping[str, np.ndarray]) -> np.ndarray:
        *mask, values = _ordered(self, deps)
        out = threshold(values, self.op, self.value)
        if mask:
            out &= mask[0] == 1
        return out.astype(np.uint8)


@register_expert("map/safe-landing")
class MapSafeLanding(Expert):
    """1 where landing looks safe: level (normals), near (depth), optionally on `safe_classes`.

    Dependencies: [normals, depth] or [normals, depth, semantic, ...]. Thresholds default to the
    Dronescapes rule (see `safe_landing`); `vertical_axis` is 'y' for forward-looking cameras, 'z'
    for nadir ones; `max_depth` null drops the depth test. With semantic dependencies the pixel must
    also be in `safe_classes` (one list for all, or one per semantic dependency) for a `mode` vote
    of them ('majority': more than half, as the dataset's safe-landing-semantics takes 2 of 3 raw
    Mask2Former maps; 'all'; 'any').
    """

    n_deps = None
    dep_kinds = ("normals", "depth", "semantic")

    def __init__(self, vertical_axis: Literal["x", "y", "z"] = "y", min_vertical: float = 0.8,
                 max_others: float = 1.2, max_depth: float | None = 0.9,
                 safe_classes: list[str] | list[list[str]] = ("land", "road"),
                 mode: Literal["majority", "all", "any"] = "majority"):
        if vertical_axis not in AXES:
            raise ValueError(f"vertical_axis must be x, y or z, got {vertical_axis!r}")
        self.vertical_axis, self.min_vertical, self.max_others = vertical_axis, min_vertical, max_others
        self.max_depth = max_depth
        self.vote = ClassVote([list(c) if not isinstance(c, str) else c for c in safe_classes], mode,
                              "safe_classes")

    def output(self, deps: Mapping[str, OutputSpec]) -> OutputSpec:
        items = list(deps.items())
        expected = ("normals", "depth") + ("semantic",) * max(len(items) - 2, 0)
        if len(items) < 2 or any(s.kind != k for (_, s), k in zip(items, expected)):
            got = ", ".join(f"{n} ({s.kind})" for n, s in items) or "none"
            raise ValueError(f"map/safe-landing takes [normals, depth] or [normals, depth, semantic, ...], "
                             f"got {got}")
        (normals_name, normals), (depth_name, depth) = items[:2]
        if normals.channels != 3:
            raise ValueError(f"dependency '{normals_name}' has {normals.channels} channels, not 3")
        if depth.channels != 1:
            raise ValueError(f"dependency '{depth_name}' has {depth.channels} channels, not 1")
        if self.max_depth is not None and \
                not grows_with_distance(require_quantity(depth_name, depth.quantity, "map/safe-landing")):
            raise ValueError(f"dependency '{depth_name}' holds inverse depth (larger is closer), so "
                             f"max_depth cannot bound it: set max_depth: null and AND the mask with "
                             f"map/threshold (deps [mask, {depth_name}], op ge)")
        if len(items) > 2:
            self.vote.bind(items[2:])
        return _binary_output()

    def __call__(self, frames: np.ndarray, deps: Mapping[str, np.ndarray]) -> np.ndarray:
        normals, depth, *semantic = _ordered(self, deps)
        out = safe_landing(normals, depth, self.vertical_axis, self.min_vertical, self.max_others,
                           self.max_depth)
        if semantic:
            out &= self.vote(semantic)
        return out.astype(np.uint8)[..., None]
