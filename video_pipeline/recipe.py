"""Recipe: YAML -> a validated, resolved description of the expert graph.

Validation instantiates every expert (cheap: models load later, in `setup`) and asks each for its
output spec given its dependencies' specs, so wrong parameters, unknown classes and bad dependency
kinds are all reported as `FILE:LINE: what is wrong` before a single frame is decoded. The first run
of a recipe sets up those same instances (`Recipe.take_expert`), and every run reuses the weights
validation resolved (`Recipe.resolve_weights`): each expert is built once, each weight resolved once.
"""
from __future__ import annotations

import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from video_pipeline import registry
from video_pipeline.codecs import DEFAULT as DEFAULT_CODEC
from video_pipeline.codecs import ZSTD1
from video_pipeline.codecs import resolve as resolve_codec
from video_pipeline.codecs import CodecSpec, check_codec, codec_fits, parse_codec
from video_pipeline.errors import RecipeError, WeightsError
from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.graph import CycleError, topological_order
from video_pipeline.yamlio import LineDict, excerpt, load_yaml

TOP_KEYS = {"resolution", "shard_frames", "device", "plugins", "codec", "experts"}
EXPERT_KEYS = {"type", "deps", "params", "weights", "batch_size", "device", "dtype", "resolution", "codec"}
RESERVED_NAMES = {"next_frames", "next_sign", "frames", "zarr.json"}  # zarr.json: the store's metadata file
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.()+\-]{0,127}\Z")  # a folder name in the store: 128 at most
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
MAX_SIDE = 16384


@dataclass(frozen=True)
class ExpertSpec:
    """One expert of a recipe, resolved: params include every default."""

    name: str
    type: str
    deps: tuple[str, ...]
    params: dict
    weights: str | None
    batch_size: int
    device: str | None
    dtype: str | None
    resolution: tuple[int, int] | None
    line: int
    output: OutputSpec | None = field(compare=False)
    codec: CodecSpec = DEFAULT_CODEC  # its own `codec:`, else the recipe's, else the default
    # why `output` is unknown (None): its weights could not be resolved at validation time. The
    # error is raised only if a run needs this expert, so other experts of the recipe still run.
    pending_error: str | None = field(default=None, compare=False)
    # the instance validation built, bound and asked for `output` (None while `output` is): the
    # first run of the recipe sets this one up rather than building another (`Recipe.take_expert`)
    expert: Expert | None = field(default=None, compare=False, repr=False)

    def identity(self) -> dict:
        """What defines the stored data (device and batch size do not). The codec is part of it
        when it is neither the default ("auto", or the codec "auto" picks for this output) nor
        zstd level 1, the default before "auto" (an
        array keeps the codec it was created with, and every codec is lossless: resuming a store
        made with the old default writes on in zstd)."""
        ident = {"type": self.type, "deps": list(self.deps), "params": self.params,
                 "weights": self.weights, "dtype": self.dtype,
                 "resolution": list(self.resolution) if self.resolution else None}
        auto = resolve_codec(DEFAULT_CODEC, self.output.kind, self.output.dtype) if self.output else None
        if self.codec not in (DEFAULT_CODEC, ZSTD1, auto):
            ident["codec"] = self.codec.to_dict()
        return ident

    def build(self) -> Expert:
        """A fresh, unbound instance of the expert (no model loaded)."""
        return registry.get_expert(self.type)(**self.params)


@dataclass(frozen=True)
class Recipe:
    """A validated recipe; `experts` is in dependency order."""

    path: Path
    resolution: tuple[int, int] | None
    shard_frames: int
    device: str
    plugins: tuple[str, ...]
    experts: dict[str, ExpertSpec]
    # name -> weights.ResolvedWeights, filled by validation and `resolve_weights` (one resolution each)
    resolved: dict = field(default_factory=dict, compare=False, repr=False)
    taken: set = field(default_factory=set, compare=False, repr=False)  # see take_expert

    def take_expert(self, name: str) -> tuple[Expert, bool]:
        """An unloaded instance of expert `name` and whether it is validation's (already configured
        by its `output`): validation's instance the first time, a fresh one after that, so a run
        never sets up an instance another run may still hold."""
        spec = self.experts[name]
        if spec.expert is not None and name not in self.taken:
            self.taken.add(name)
            return spec.expert, True
        return spec.build(), False

    def resolve_weights(self, name: str):
        """The resolved weights of expert `name` (None when it takes none), resolved once per recipe:
        a file's checksum is computed once, a download made once. Raises WeightsError."""
        spec = self.experts[name]
        if spec.weights is None:
            return None
        if name not in self.resolved:
            from video_pipeline.weights import resolve

            self.resolved[name] = resolve(spec.weights, expert=name, base_dir=self.path.parent)
        return self.resolved[name]

    def to_dict(self) -> dict:
        """The resolved recipe as stored in the store's attrs."""
        return {"resolution": list(self.resolution) if self.resolution else None,
                "shard_frames": self.shard_frames, "plugins": list(self.plugins),
                "experts": {n: e.identity() for n, e in self.experts.items()}}

    @property
    def sha256(self) -> str:
        return sha256_of(self.to_dict())

    @property
    def deps(self) -> dict[str, tuple[str, ...]]:
        return {n: e.deps for n, e in self.experts.items()}


def sha256_of(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file. Raises RecipeError `FILE:LINE: ...`."""
    path = Path(path)
    data = load_yaml(path, "recipe")
    return parse_recipe(data, path)


def parse_recipe(data: LineDict, path: Path) -> Recipe:
    """Validate a recipe mapping read by `yamlio.load_yaml` (line numbers for errors)."""

    def fail(line: int, msg: str):
        raise RecipeError(f"{path}:{line}: {msg}")

    for key in data:
        if key not in TOP_KEYS:
            fail(data.line_of(key), f"unknown key '{key}' (allowed: {', '.join(sorted(TOP_KEYS))})")

    resolution = _resolution(data.get("resolution"), data.line_of("resolution"), "resolution", fail)
    shard_frames = data.get("shard_frames", 32)
    if not _is_int(shard_frames) or not 1 <= shard_frames <= 4096:
        fail(data.line_of("shard_frames"), f"shard_frames must be an integer in 1..4096, got {excerpt(shard_frames)}")
    device = data.get("device", "auto")
    if not isinstance(device, str) or not DEVICE_RE.match(device):
        fail(data.line_of("device"), f"device must be auto, cpu, mps, cuda or cuda:N, got {excerpt(device)}")

    codec = _codec(data.get("codec"), data.line_of("codec"), "codec", fail) or DEFAULT_CODEC

    plugins = data.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        fail(data.line_of("plugins"), "plugins must be a list of Python file paths")
    registry.load_entry_points()
    for plugin in plugins:
        plugin_path = (path.parent / plugin).resolve()
        try:
            registry.load_plugin_file(plugin_path)
        except Exception as err:
            fail(data.line_of("plugins"), str(err))

    experts = data.get("experts")
    if not isinstance(experts, LineDict) or not experts:
        fail(data.line_of("experts"), "experts must be a non-empty mapping of name -> {type: ...}")

    raw: dict[str, LineDict] = {}
    for name, spec in experts.items():
        line = experts.line_of(name)
        if not isinstance(name, str) or not NAME_RE.match(name) or name in RESERVED_NAMES:
            fail(line, f"invalid expert name {excerpt(name)} (letters, digits, _ . - + ( ), at most 128; not "
                       f"{', '.join(sorted(RESERVED_NAMES))}; must not start with _)")
        if not isinstance(spec, LineDict):
            fail(line, f"expert '{name}' must be a mapping with at least 'type'")
        for key in spec:
            if key not in EXPERT_KEYS:
                fail(spec.line_of(key), f"experts.{name}: unknown key '{key}' "
                                        f"(allowed: {', '.join(sorted(EXPERT_KEYS))})")
        if "type" not in spec:
            fail(line, f"experts.{name}: missing 'type' (run `vre experts` to list them)")
        deps = spec.get("deps", [])
        if isinstance(deps, str):
            deps = [deps]
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            fail(spec.line_of("deps"), f"experts.{name}.deps must be a list of expert names")
        for dep in deps:
            if dep not in experts:
                fail(spec.line_of("deps"), f"experts.{name}.deps: '{dep}' is not an expert of this recipe")
        if len(set(deps)) != len(deps):
            fail(spec.line_of("deps"), f"experts.{name}.deps lists an expert twice")
        raw[name] = spec

    try:
        order = topological_order({n: list(s.get("deps", [])) if not isinstance(s.get("deps"), str)
                                   else [s["deps"]] for n, s in raw.items()})
    except CycleError as err:
        fail(raw[err.cycle[0]].line_of("deps"), f"{err} (remove one of these deps)")

    resolved: dict[str, ExpertSpec] = {}
    weights: dict = {}
    for name in order:
        resolved[name] = _expert_spec(name, raw[name], resolved, path, fail, codec, weights)
    return Recipe(path=path, resolution=resolution, shard_frames=int(shard_frames), device=device,
                  plugins=tuple(plugins), experts=resolved, resolved=weights)


def _expert_spec(name: str, spec: LineDict, done: dict[str, ExpertSpec], path: Path, fail,
                 default_codec: CodecSpec, resolved_weights: dict) -> ExpertSpec:
    """Validate one expert entry; weights it resolves are added to `resolved_weights` (name -> ResolvedWeights)."""
    line = spec.line
    type_name = spec["type"]
    if not isinstance(type_name, str):
        fail(spec.line_of("type"), f"experts.{name}.type must be a string like 'color/rgb'")
    try:
        cls = registry.get_expert(type_name)
    except KeyError as err:
        fail(spec.line_of("type"), f"experts.{name}: {err.args[0]}")
    deps = spec.get("deps", [])
    deps = tuple([deps] if isinstance(deps, str) else deps)

    params = spec.get("params", {}) or {}
    if not isinstance(params, dict):
        fail(spec.line_of("params"), f"experts.{name}.params must be a mapping")
    declared = cls.parameters()
    hints = _hints(cls)
    resolved_params = {}
    for key, value in params.items():
        pline = params.line_of(key) if isinstance(params, LineDict) else spec.line_of("params")
        if key not in declared:
            known = ", ".join(declared) or "none"
            fail(pline, f"experts.{name}.params: unknown parameter '{key}' for {type_name} (known: {known})")
        try:
            resolved_params[key] = check_type(value, hints.get(key, Any))
        except TypeError as err:
            fail(pline, f"experts.{name}.params.{key}: {err}")
    for key, p in declared.items():
        if key not in resolved_params:
            if p.default is p.empty:
                fail(spec.line_of("params"), f"experts.{name}.params: missing required parameter '{key}' for {type_name}")
            resolved_params[key] = _jsonable(p.default)

    weights = spec.get("weights", cls.default_weights)
    if weights is not None and not isinstance(weights, str):
        fail(spec.line_of("weights"), f"experts.{name}.weights must be a path, URL or model id")
    batch_size = spec.get("batch_size", cls.batch_size)
    if not _is_int(batch_size) or not 1 <= batch_size <= 4096:
        fail(spec.line_of("batch_size"), f"experts.{name}.batch_size must be an integer in 1..4096")
    device = spec.get("device")
    if device is not None and (not isinstance(device, str) or not DEVICE_RE.match(device)):
        fail(spec.line_of("device"), f"experts.{name}.device must be auto, cpu, mps, cuda or cuda:N")
    dtype = spec.get("dtype")
    if dtype is not None and dtype not in ("float32", "float16", "bfloat16"):
        fail(spec.line_of("dtype"), f"experts.{name}.dtype must be float32, float16 or bfloat16")
    resolution = _resolution(spec.get("resolution"), spec.line_of("resolution"), f"experts.{name}.resolution", fail)
    codec = _codec(spec.get("codec"), spec.line_of("codec"), f"experts.{name}.codec", fail)

    if cls.n_deps is not None and len(deps) != cls.n_deps:
        fail(spec.line_of("deps") if "deps" in spec else line,
             f"experts.{name}: {type_name} needs exactly {cls.n_deps} dependenc{'y' if cls.n_deps == 1 else 'ies'}, got {len(deps)}")
    def spec_with(output, pending=None, expert=None):
        return ExpertSpec(name=name, type=type_name, deps=deps, params=resolved_params, weights=weights,
                          batch_size=int(batch_size), device=device, dtype=dtype, resolution=resolution,
                          line=line, output=output, pending_error=pending, codec=codec or DEFAULT_CODEC,
                          expert=expert)

    pending = next((done[d].pending_error for d in deps if done[d].output is None), None)
    if pending is not None:
        return spec_with(None, pending)
    dep_specs = {d: done[d].output for d in deps}
    if cls.dep_kinds:
        for d, out in dep_specs.items():
            if out.kind not in cls.dep_kinds:
                fail(spec.line_of("deps"), f"experts.{name}: dependency '{d}' is {out.kind}, "
                                           f"{type_name} takes {' or '.join(cls.dep_kinds)}")
    try:
        expert = cls(**resolved_params)
    except (ValueError, TypeError) as err:
        fail(spec.line_of("params") if "params" in spec else line, f"experts.{name} ({type_name}): {err}")
    weights_path = None
    if cls.output_needs_weights and weights is not None:
        from video_pipeline.weights import resolve

        try:
            resolved_weights[name] = resolve(weights, expert=name, base_dir=path.parent)
        except WeightsError as err:  # only an error once a run needs this expert (see runner.prepare)
            return spec_with(None, f"{path}:{spec.line_of('weights') or line}: {err}")
        weights_path = resolved_weights[name].path
    expert.bind(name, deps, weights, weights_path, dtype)
    try:
        output = expert.output(dep_specs)
    except (ValueError, TypeError) as err:
        fail(spec.line_of("params") if "params" in spec else line, f"experts.{name} ({type_name}): {err}")
    if not isinstance(output, OutputSpec):
        fail(line, f"experts.{name}: {type_name}.output() must return an OutputSpec")
    if codec is None:  # the recipe-wide codec where it can store this output, else the default
        fits = codec_fits(default_codec, output.dtype, output.channels)
        return replace(spec_with(output, expert=expert), codec=default_codec if fits else DEFAULT_CODEC)
    try:
        check_codec(codec, output.dtype, output.channels)
    except ValueError as err:
        fail(spec.line_of("codec"), f"experts.{name}.codec: {err}")
    return spec_with(output, expert=expert)


def _resolution(value, line: int, key: str, fail):
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2 or not all(_is_int(v) for v in value)
            or not all(1 <= v <= MAX_SIDE for v in value)):
        fail(line, f"{key} must be [HEIGHT, WIDTH] with integers in 1..{MAX_SIDE}, got {excerpt(value)}")
    return (int(value[0]), int(value[1]))


def _codec(value, line: int, key: str, fail) -> CodecSpec | None:
    if value is None:
        return None
    try:
        return parse_codec(value)
    except ValueError as err:
        fail(line, f"{key}: {err}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _hints(cls: type[Expert]) -> dict:
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:
        return {}


def _jsonable(value):
    return json.loads(json.dumps(value)) if isinstance(value, (list, tuple, dict)) else value


def type_name(annotation) -> str:
    """Readable name of a parameter annotation, for messages and `vre experts`."""
    if annotation is Any or annotation is None:
        return "any"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "|".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return f"list of {type_name(args[0])}" if args else "list"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def check_type(value, annotation):
    """Return `value` (ints widened to float where a float is expected) or raise TypeError."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        if value in args:
            return value
        raise TypeError(f"must be one of {', '.join(repr(a) for a in args)}, got {excerpt(value)}")
    if origin in (typing.Union, types.UnionType):
        for a in args:
            try:
                return check_type(value, a)
            except TypeError:
                pass
        raise TypeError(f"must be {type_name(annotation)}, got {excerpt(value)}")
    if annotation is type(None):
        if value is None:
            return None
        raise TypeError(f"must be null, got {excerpt(value)}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise TypeError(f"must be a list, got {excerpt(value)}")
        if origin is tuple and args and Ellipsis not in args:
            if len(value) != len(args):
                raise TypeError(f"must be a list of {len(args)} values, got {excerpt(value)}")
            return [check_type(v, a) for v, a in zip(value, args)]
        inner = args[0] if args else Any
        return [check_type(v, inner) for v in value]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise TypeError(f"must be a mapping, got {excerpt(value)}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"must be true or false, got {excerpt(value)}")
    if annotation is int:
        if _is_int(value):
            return value
        raise TypeError(f"must be an integer, got {excerpt(value)}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                raise TypeError(f"must be a finite number, got {excerpt(value)}")
            return float(value)
        raise TypeError(f"must be a number, got {excerpt(value)}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"must be a string, got {excerpt(value)}")
    return value
