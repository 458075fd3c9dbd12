"""Reusable pytest checks for experts: the battery every built-in passes, for plugin authors too.

Subclass `ExpertTests` in a test module and name the expert to test; pytest runs every check on it:

    from video_pipeline.testing import ExpertTests

    class TestMyDepth(ExpertTests):
        expert_type = "mylab/depth"
        params = {"scale": 2.0}
        weights = "tests/data/tiny.pth"            # a local file/folder, or None for none

    class TestMyNormals(ExpertTests):                # a derived expert: its dependencies are
        expert_type = "mylab/normals"                # recipe snippets of other expert types
        deps = {"depth": {"type": "mylab/depth", "weights": "tests/data/tiny.pth"}}

The checks: the output spec is consistent; a batch has the declared shape and dtype and values in
the declared range (class indices below the number of classes, binary maps 0/1, floats finite);
frames one by one give what the batch gives; two calls agree; every parameter is annotated and its
default (if any) is JSON-safe and accepted by its annotation; each of `invalid_params` (parameter
name, bad value) is refused when the recipe is loaded, in one line naming that parameter; and an
end-to-end `runner.run` of a
tiny recipe on a synthetic clip stores the array with the right shape, dtype and attrs (read back
with plain zarr). Everything runs through the real machinery: the recipe loader, the runner's weights
resolution, expert set-up and output checks, and the store.
"""
from __future__ import annotations

import json
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml
import zarr

from video_pipeline import registry
from video_pipeline.errors import RecipeError
from video_pipeline.expert import KINDS, Expert, OutputSpec
from video_pipeline.quantities import QUANTITIES
from video_pipeline.recipe import ExpertSpec, Recipe, check_type, load_recipe
from video_pipeline.runner import RunOptions, check_output, load_experts, resolve_weights, run
from video_pipeline.synth import make_clip, scene_frames
from video_pipeline.video import partner_frames

TESTED = "tested"          # the name of the expert under test in the generated recipes
E2E_FRAMES = 3             # frames of the end-to-end clip: with E2E_SHARD, one full and one partial shard
E2E_SHARD = 2
# Channels implied by a kind (kinds not listed take any number).
KIND_CHANNELS = {"normals": 3, "flow": 2}
# Relative tolerance of float comparisons: two float16 steps (outputs are stored as float16).
RTOL = 2.0 ** -9
# Ranges implied by a kind when the spec declares none.
KIND_RANGES = {"normals": (0.0, 1.0), "binary": (0, 1)}


def test_device() -> str:
    """Device the battery runs learned experts on: $VRE_TEST_DEVICE (`pytest --device cuda`), else cpu."""
    return os.environ.get("VRE_TEST_DEVICE", "cpu")
test_device.__test__ = False  # a helper, not a test


@dataclass(frozen=True)
class ExpertCase:
    """One expert to check: its type, recipe settings, and the frames it sees.

    deps: dependency name -> recipe snippet of another expert ({type, params, weights, deps}); their
      outputs are computed first and handed over, exactly as the runner does.
    weights: a local path (relative paths are taken from the current folder), URL or hub id.
    frames_shape: (N, H, W) of the synthetic frames; N >= 2.
    atol: absolute tolerance when float outputs of two runs are compared, on top of two float16
      steps of the value (`RTOL`); batching may change the summation order inside a network.
    label_mismatch: fraction of uint8 values allowed to differ between runs (0: identical).
    invalid_params: (parameter name, bad value) pairs, each of which the expert must refuse.
    """

    type: str
    params: Mapping[str, Any] = field(default_factory=dict)
    weights: str | None = None
    deps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    frames_shape: tuple[int, int, int] = (4, 48, 64)
    atol: float = 1e-3
    label_mismatch: float = 0.0
    invalid_params: tuple[tuple[str, Any], ...] = ()

    def recipe(self) -> dict:
        """The recipe (as a dict) computing the dependencies and the expert under test on CPU."""
        experts = {name: _absolute_weights(dict(snippet)) for name, snippet in self.deps.items()}
        tested: dict[str, Any] = {"type": self.type}
        if self.deps:
            tested["deps"] = list(self.deps)
        if self.params:
            tested["params"] = dict(self.params)
        if self.weights is not None:
            tested["weights"] = self.weights
        experts[TESTED] = _absolute_weights(tested)
        return {"shard_frames": E2E_SHARD, "device": test_device(), "experts": experts}

    def write_recipe(self, folder: Path) -> Recipe:
        """Write `recipe()` as `folder/recipe.yaml` and load it through the real recipe loader."""
        path = Path(folder) / "recipe.yaml"
        path.write_text(yaml.safe_dump(self.recipe(), sort_keys=False))
        return load_recipe(path)


def _absolute_weights(snippet: dict) -> dict:
    """Make a snippet's relative local weights path absolute (the recipe lives in a temp folder)."""
    weights = snippet.get("weights")
    if isinstance(weights, str) and Path(weights).exists():
        snippet["weights"] = str(Path(weights).resolve())
    return snippet


def synthetic_frames(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """uint8 [N,H,W,3]: a smooth camera move over a textured scene (see `synth.scene_frames`)."""
    n, h, w = shape
    return scene_frames(n, (h, w), seed=seed)


def next_frame_deps(frames: np.ndarray, step: int = 1) -> dict[str, np.ndarray]:
    """The runner's `next_frames` (uint8 [N,H,W,3]) and `next_sign` (float32 [N]) for a whole clip,
    paired as the runner pairs them (`video.partner_frames`): frame i gets frame i+step (sign +1);
    where the clip has none, frame i-step (sign -1).
    """
    n = len(frames)
    if n <= abs(step):
        raise ValueError(f"need more than {abs(step)} frames for next-frame dependencies at step {step}, got {n}")
    index, sign = partner_frames(np.arange(n), n, step)
    return {"next_frames": frames[index], "next_sign": sign}


@dataclass
class Prepared:
    """An expert under test, set up on CPU, with its frames and its dependencies' outputs.

    frames: uint8 [N,H,W,3]; inputs: dependency name (and next_frames/next_sign) -> array [N,...].
    """

    case: ExpertCase
    recipe: Recipe
    experts: dict[str, Expert]
    frames: np.ndarray
    inputs: dict[str, np.ndarray]

    @property
    def spec(self) -> ExpertSpec:
        return self.recipe.experts[TESTED]

    @property
    def expert(self) -> Expert:
        return self.experts[TESTED]

    def call(self, index: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The expert's raw output on frames `index` (and the same rows of every input)."""
        return self.expert(self.frames[index], {k: v[index] for k, v in self.inputs.items()})

    def teardown(self) -> None:
        for expert in self.experts.values():
            expert.teardown()


def prepare(case: ExpertCase, folder: Path) -> Prepared:
    """Load the case's recipe, set up every expert on CPU (weights resolved as the runner does) and
    compute the dependencies on synthetic frames, in dependency order, checked as the runner checks."""
    recipe = case.write_recipe(folder)
    names = list(recipe.experts)
    experts = load_experts(recipe, names, resolve_weights(recipe, names), test_device())
    frames = synthetic_frames(case.frames_shape)
    n, h, w = case.frames_shape
    outputs: dict[str, np.ndarray] = {}

    def inputs_of(name: str) -> dict[str, np.ndarray]:
        inputs = {d: outputs[d] for d in recipe.experts[name].deps}
        expert = experts[name]
        return {**inputs, **next_frame_deps(frames, expert.frame_step)} if expert.needs_next_frame else inputs

    for name, spec in recipe.experts.items():
        if name != TESTED:
            out = experts[name](frames, inputs_of(name))
            outputs[name] = check_output(spec, out, n, (h, w), np.arange(n))
    return Prepared(case, recipe, experts, frames, inputs_of(TESTED))


# ------------------------------------------------------------------------------------ the checks
def check_output_spec(spec: OutputSpec) -> None:
    """AssertionError unless `spec` is a consistent, JSON-safe description of an output."""
    assert isinstance(spec, OutputSpec), f"output() returned {type(spec).__name__}, not an OutputSpec"
    assert spec.kind in KINDS, f"kind {spec.kind!r} is not one of {KINDS}"
    assert spec.dtype in ("uint8", "float16", "float32"), f"dtype {spec.dtype!r}"
    if spec.kind in KIND_CHANNELS:
        assert spec.channels == KIND_CHANNELS[spec.kind], \
            f"a {spec.kind} output has {KIND_CHANNELS[spec.kind]} channels, the spec says {spec.channels}"
    if spec.kind == "semantic":
        assert spec.classes, "a semantic output must name its classes"
        assert len(spec.palette) == len(spec.classes), "a semantic output needs one palette colour per class"
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in spec.palette), \
            f"palette colours must be RGB triples in 0..255, got {spec.palette}"
        assert spec.channels in (1, len(spec.classes)), \
            f"a semantic output is a class map (1 channel) or probabilities ({len(spec.classes)}), " \
            f"not {spec.channels} channels"
        if spec.channels == 1:
            assert spec.dtype == "uint8", "a class map is stored as uint8"
            assert len(spec.classes) <= 255, "255 is the 'not computed' fill: at most 255 classes"
    elif spec.classes:
        assert not spec.palette or len(spec.palette) == len(spec.classes)
    if spec.kind == "binary":
        assert spec.dtype == "uint8", "binary maps are stored as uint8 0/1"
    if spec.kind == "depth":
        assert spec.quantity in QUANTITIES, \
            f"a depth output must declare its quantity (one of {', '.join(QUANTITIES)}), got {spec.quantity!r}"
    if spec.value_range is not None:
        lo, hi = spec.value_range
        assert lo <= hi, f"value_range {spec.value_range} is not (low, high)"
    json.dumps(spec.to_attrs())  # the attrs go into the store as JSON


def check_output_array(out, spec: OutputSpec, n: int) -> None:
    """AssertionError unless `out` is an array [n,h,w,channels] of the spec's dtype."""
    assert isinstance(out, np.ndarray), f"returned {type(out).__name__}, expected a numpy array"
    assert out.ndim == 4, f"returned shape {out.shape}, expected [N, H, W, C]"
    assert out.shape[0] == n, f"returned {out.shape[0]} frames for {n}"
    assert out.shape[3] == spec.channels, f"returned {out.shape[3]} channels, the spec says {spec.channels}"
    assert out.shape[1] >= 1 and out.shape[2] >= 1, f"returned an empty image {out.shape}"
    assert out.dtype == np.dtype(spec.dtype), f"returned {out.dtype}, the spec says {spec.dtype}"


def check_values(out: np.ndarray, spec: OutputSpec) -> None:
    """AssertionError unless the values of `out` [N,h,w,C] lie where the spec says.

    Floats are finite and within `value_range` (with float16 rounding); class maps hold indices below
    the number of classes; binary maps hold 0 and 1 only.
    """
    if out.dtype.kind == "f":
        assert np.isfinite(out).all(), "output has NaN or Inf values"
    value_range = spec.value_range or KIND_RANGES.get(spec.kind)
    if value_range is not None and out.size:
        lo, hi = value_range
        slack = 0.0 if out.dtype.kind in "ui" else 1e-3 * max(1.0, abs(hi - lo))
        found = (float(out.min()), float(out.max()))
        assert lo - slack <= found[0] and found[1] <= hi + slack, \
            f"values span {found}, outside value_range {tuple(value_range)}"
    if spec.kind == "semantic" and spec.channels == 1:
        assert int(out.max()) < len(spec.classes), \
            f"class index {int(out.max())} for {len(spec.classes)} classes"
    if spec.kind == "binary":
        assert set(np.unique(out).tolist()) <= {0, 1}, f"binary map holds {np.unique(out)[:8]}"


def check_parameters(cls: type[Expert]) -> None:
    """AssertionError unless every parameter is annotated and its default, if it has one (a recipe
    must give those without), is JSON-safe and accepted by the annotation (defaults are stored in
    the store's attrs as the recipe's resolved params)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception as err:
        raise AssertionError(f"the annotations of {cls.__name__}.__init__ do not resolve: {err}") from err
    for name, p in cls.parameters().items():
        assert name in hints, f"parameter '{name}' has no annotation"
        if p.default is p.empty:
            continue
        try:
            check_type(json.loads(json.dumps(p.default)), hints[name])
        except TypeError as err:
            raise AssertionError(f"default of '{name}' does not match its annotation: {err}") from None


def assert_same_output(a: np.ndarray, b: np.ndarray, atol: float, label_mismatch: float = 0.0) -> None:
    """AssertionError unless two outputs agree: floats within `atol` plus two float16 steps of the
    value (`RTOL`), uint8 in all but a `label_mismatch` fraction of values."""
    assert a.shape == b.shape and a.dtype == b.dtype, f"{a.shape} {a.dtype} vs {b.shape} {b.dtype}"
    if a.dtype.kind == "f":
        a, b = a.astype(np.float32), b.astype(np.float32)
        excess = np.abs(a - b) - RTOL * np.abs(b)
        assert float(excess.max(initial=0.0)) <= atol, \
            f"outputs differ by up to {np.abs(a - b).max():.4g} (atol {atol})"
    else:
        differ = float(np.mean(a != b)) if a.size else 0.0
        assert differ <= label_mismatch, f"{differ:.2%} of values differ (allowed {label_mismatch:.2%})"


# ------------------------------------------------------------------------------------ the base class
class ExpertTests:
    """Subclass and set `expert_type` (and what it needs); pytest runs every `test_*` check.

    Class attributes: `expert_type`, `params`, `weights`, `deps` (name -> recipe snippet),
    `frames_shape` (N, H, W), `atol`, `label_mismatch`, `invalid_params` (see `ExpertCase`). A
    subclass may instead
    override the `case` fixture (e.g. parametrized over many experts, as the built-ins' tests do).
    """

    expert_type: ClassVar[str] = ""
    params: ClassVar[dict] = {}
    weights: ClassVar[str | None] = None
    deps: ClassVar[dict] = {}
    frames_shape: ClassVar[tuple[int, int, int]] = (4, 48, 64)
    atol: ClassVar[float] = 1e-3
    label_mismatch: ClassVar[float] = 0.0
    invalid_params: ClassVar[tuple[tuple[str, Any], ...]] = ()

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls) -> ExpertCase:
        if not cls.expert_type:
            raise AssertionError(f"{cls.__name__}: set expert_type = 'family/name'")
        return ExpertCase(cls.expert_type, cls.params, cls.weights, cls.deps, cls.frames_shape,
                          cls.atol, cls.label_mismatch, tuple(cls.invalid_params))

    @pytest.fixture(scope="class")
    @classmethod
    def prepared(cls, case: ExpertCase, tmp_path_factory):
        prepared = prepare(case, tmp_path_factory.mktemp("expert"))
        yield prepared
        prepared.teardown()

    @pytest.fixture(scope="class")
    @classmethod
    def batch_output(cls, prepared: Prepared) -> np.ndarray:
        return prepared.call()

    def test_registered_class(self, case: ExpertCase):
        cls = registry.get_expert(case.type)
        assert issubclass(cls, Expert) and cls.type_name == case.type
        assert cls.n_deps is None or cls.n_deps >= 0
        assert set(cls.dep_kinds) <= set(KINDS), f"dep_kinds {cls.dep_kinds} are not all in {KINDS}"
        assert cls.batch_size >= 1

    def test_parameters_are_declared(self, case: ExpertCase):
        check_parameters(registry.get_expert(case.type))

    def test_invalid_parameters_are_refused(self, case: ExpertCase, tmp_path: Path):
        if not case.invalid_params:
            pytest.skip("no invalid_params given for this expert")
        for i, (name, value) in enumerate(case.invalid_params):
            bad = replace(case, params={**case.params, name: value})
            folder = tmp_path / str(i)
            folder.mkdir()
            with pytest.raises(RecipeError) as err:
                bad.write_recipe(folder)  # the loader builds and validates the expert
            message = str(err.value)
            assert "\n" not in message, f"{name}={value!r}: the refusal is not one line: {message}"
            assert name in message, f"{name}={value!r} is refused without naming '{name}': {message}"

    def test_output_spec(self, prepared: Prepared):
        check_output_spec(prepared.spec.output)

    def test_output_shape_and_dtype(self, prepared: Prepared, batch_output: np.ndarray):
        check_output_array(batch_output, prepared.spec.output, len(prepared.frames))

    def test_values_in_range(self, prepared: Prepared, batch_output: np.ndarray):
        check_values(batch_output, prepared.spec.output)

    def test_frames_are_independent_of_batching(self, prepared: Prepared, batch_output: np.ndarray):
        singles = np.concatenate([prepared.call(slice(i, i + 1)) for i in range(len(prepared.frames))])
        # GPU kernels (and float16 autocast) differ with the batch size: allow rounding-level changes
        gpu = test_device() != "cpu"
        assert_same_output(singles, batch_output, max(prepared.case.atol, 1e-2) if gpu else prepared.case.atol,
                           max(prepared.case.label_mismatch, 1e-3) if gpu else prepared.case.label_mismatch)

    def test_frame_parallel_calls_at_once_give_the_batch_output(self, prepared: Prepared, batch_output: np.ndarray):
        """A `frame_parallel` expert called on the batch's halves in two threads at once (as the
        runner calls it) gives the frames of one call on the whole batch, exactly."""
        if not prepared.expert.frame_parallel:
            pytest.skip("not frame_parallel")
        from concurrent.futures import ThreadPoolExecutor

        half = len(prepared.frames) // 2
        with ThreadPoolExecutor(2) as pool:
            parts = list(pool.map(prepared.call, [slice(0, half), slice(half, None)] * 3))
        for i in range(0, 6, 2):
            np.testing.assert_array_equal(np.concatenate(parts[i:i + 2]), batch_output)

    def test_deterministic(self, prepared: Prepared, batch_output: np.ndarray):
        assert_same_output(prepared.call(), batch_output, prepared.case.atol, prepared.case.label_mismatch)

    def test_end_to_end_run(self, prepared: Prepared, tmp_path: Path):
        _, h, w = prepared.case.frames_shape
        clip = make_clip(tmp_path / "clip.mp4", n_frames=E2E_FRAMES, size=(h, w))
        run(prepared.recipe, clip, tmp_path / "out.zarr", RunOptions(device=test_device(), progress=False))
        spec = prepared.spec.output
        group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
        arr = group[TESTED]
        assert arr.shape == (E2E_FRAMES, h, w, spec.channels)
        assert arr.dtype == np.dtype(spec.dtype)
        attrs = dict(arr.attrs)
        assert attrs["type"] == prepared.case.type and attrs["kind"] == spec.kind
        assert attrs["params"] == prepared.spec.params
        assert attrs["deps"] == list(prepared.case.deps)
        assert group[f"_progress/{TESTED}"][:].tolist() == [1] * -(-E2E_FRAMES // E2E_SHARD)
        check_values(arr[:], spec)
