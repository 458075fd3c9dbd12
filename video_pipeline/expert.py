"""The expert API: what a built-in or plugin expert implements.

An expert is a class registered under a type name (see `registry.register_expert`). Its keyword
arguments with defaults and annotations are its *parameters* (the recipe's `params:`), validated and
listed by `vre experts`. The runner binds the recipe facts (`name`, `deps`, `weights`, `device`, ...)
after construction, calls `setup(device)` once, then `__call__` per batch.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from video_pipeline.quantities import check_quantity
from video_pipeline.yamlio import excerpt

KINDS = ("image", "depth", "normals", "flow", "semantic", "binary", "features")
# Storage dtype by kind (design contract): labels and pictures as uint8, the rest float16.
DEFAULT_DTYPE = {"image": "uint8", "semantic": "uint8", "binary": "uint8",
                 "depth": "float16", "normals": "float16", "flow": "float16", "features": "float16"}


@dataclass(frozen=True)
class OutputSpec:
    """What an expert writes: `[N, h, w, channels]` of `dtype`.

    `classes`/`palette` are required for `kind="semantic"` (one name and one RGB colour per class;
    `channels` is 1 for a class map, or len(classes) for probabilities with dtype float16).
    `value_range` documents the numeric range (e.g. (0, 1) for relative depth).
    `quantity` says what the numbers of a `kind="depth"` output are (one of `quantities.QUANTITIES`:
    metric depth, relative depth, or inverse depth / disparity); only depth outputs have one. Every
    depth output should declare it: consumers refuse a depth without one, and the shared test
    battery (`video_pipeline.testing`) checks it.
    """

    channels: int
    kind: str
    dtype: str = ""
    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    value_range: tuple[float, float] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    quantity: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"OutputSpec.kind must be one of {KINDS}, got {excerpt(self.kind)}")
        if not self.dtype:
            object.__setattr__(self, "dtype", DEFAULT_DTYPE[self.kind])
        if self.dtype not in ("uint8", "float16", "float32"):
            raise ValueError(f"OutputSpec.dtype must be uint8, float16 or float32, got {excerpt(self.dtype)}")
        if self.channels < 1:
            raise ValueError(f"OutputSpec.channels must be >= 1, got {self.channels}")
        if self.palette and len(self.palette) != len(self.classes):
            raise ValueError(f"palette has {len(self.palette)} colours for {len(self.classes)} classes")
        check_quantity(self.quantity)
        if self.quantity is not None and self.kind != "depth":
            raise ValueError(f"OutputSpec.quantity is for depth outputs, not kind {excerpt(self.kind)}")
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "palette", tuple(tuple(int(v) for v in c) for c in self.palette))

    @property
    def fill_value(self):
        """Store fill: NaN for floats, 255 for uint8 (labels/binary/image)."""
        return 255 if self.dtype == "uint8" else float("nan")

    def to_attrs(self) -> dict:
        """JSON-safe description stored in the array's attrs."""
        out = {"kind": self.kind, "channels": self.channels, "dtype": self.dtype,
               "classes": list(self.classes), "palette": [list(c) for c in self.palette],
               "value_range": list(self.value_range) if self.value_range is not None else None}
        if self.quantity is not None:
            out["quantity"] = self.quantity
        out.update(dict(self.extra))
        return out


class Expert:
    """Base class of every expert.

    Subclasses declare their parameters as keyword arguments of `__init__` (annotated, with
    defaults), implement `output()` and `__call__()`, and load models lazily in `setup()`.

    Class attributes a subclass may set:
      n_deps: number of dependencies required (None: any number, including 0).
      dep_kinds: allowed kinds of dependencies (empty: any).
      needs_next_frame: the runner passes `deps["next_frames"]` (uint8 [N,H,W,3], for each frame i
        the frame i + `frame_step`, or i - `frame_step` where the video has no frame i + step) and
        `deps["next_sign"]` (float32 [N]: +1, or -1 where frame i - step stands in; see
        `video.partner_frames` for a video shorter than the step).
      frame_parallel: each output frame depends only on its own frame (and that frame's rows of the
        dependencies and partner), and `__call__` may run at once in several threads on disjoint
        frames (no state changed by a call; NumPy and OpenCV release the GIL): the runner splits
        each batch over its expert threads (`RunOptions.expert_threads`, default the usable CPUs)
        and runs OpenCV single-threaded meanwhile.
      frame_step: the distance of that frame (non-zero int, default 1; negative: an earlier frame);
        an instance may set it from its parameters (the flow experts' `delta`).
      default_weights: weights used when the recipe gives none (None: no weights needed).
      batch_size: default batch size (frames per call).
      uses_torch: whether the expert runs a torch model (device/dtype apply).
      output_needs_weights: `output()` reads the resolved weights (e.g. class names from a model
        config), so validation resolves them first (`weights_path` is bound before `output()`).
    """

    type_name: ClassVar[str] = ""
    n_deps: ClassVar[int | None] = 0
    dep_kinds: ClassVar[tuple[str, ...]] = ()
    needs_next_frame: ClassVar[bool] = False
    frame_parallel: ClassVar[bool] = False
    frame_step: int = 1
    default_weights: ClassVar[str | None] = None
    batch_size: ClassVar[int] = 8
    uses_torch: ClassVar[bool] = False
    output_needs_weights: ClassVar[bool] = False

    # Bound by the runner (see `bind`).
    name: str = ""
    deps: tuple[str, ...] = ()
    weights: str | None = None
    weights_path: Any = None
    device: str = "cpu"
    dtype: str | None = None

    def bind(self, name: str, deps: tuple[str, ...] = (), weights: str | None = None,
             weights_path: Any = None, dtype: str | None = None) -> "Expert":
        """Attach the recipe facts. `weights_path` is the resolved local file/folder (or None)."""
        self.name, self.deps, self.weights = name, tuple(deps), weights
        self.weights_path, self.dtype = weights_path, dtype
        return self

    def output(self, deps: Mapping[str, OutputSpec]) -> OutputSpec:
        """The output spec, given the output specs of the dependencies (by name)."""
        raise NotImplementedError

    def setup(self, device: str) -> None:
        """Load the model (lazily, once) on `device` ('cpu', 'cuda', 'cuda:1', 'mps')."""
        self.device = device

    def __call__(self, frames: np.ndarray, deps: Mapping[str, np.ndarray]) -> np.ndarray:
        """Map uint8 frames [N,H,W,3] (and dependency arrays [N,h,w,C]) to [N,h,w,C]."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Free the model (called once the run is over)."""

    @classmethod
    def parameters(cls) -> dict[str, inspect.Parameter]:
        """The expert's parameters: keyword arguments of `__init__` (name -> Parameter)."""
        if cls.__init__ is Expert.__init__:
            return {}
        sig = inspect.signature(cls.__init__)
        return {n: p for n, p in sig.parameters.items()
                if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}

    def __init__(self):
        pass

    def __repr__(self):
        return f"{type(self).__name__}(name={excerpt(self.name)}, type={excerpt(self.type_name)})"


def frame_steps(experts: Iterable[Expert]) -> tuple[int, ...]:
    """The frame steps whose partner frames a run decodes: one per `frame_step` of an expert that
    `needs_next_frame`, sorted (empty when no expert compares two frames)."""
    return tuple(sorted({e.frame_step for e in experts if e.needs_next_frame}))
