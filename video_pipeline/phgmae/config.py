"""Training config: YAML -> a validated `TrainConfig`, errors as `FILE:LINE: what is wrong`.

Each section is a frozen dataclass whose annotated fields are the section's keys (a field without a
default is required); `parse_section` checks unknown keys, missing keys and value types against
those annotations, then `load_config` checks what spans sections (nodes named consistently, crop
within the resolution, ...). Relative paths are relative to the config file. docs/training.md
lists every key.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from video_pipeline.errors import RecipeError
from video_pipeline.recipe import DEVICE_RE, check_type
from video_pipeline.yamlio import LineDict, excerpt, load_yaml

RANGE_RE = re.compile(r"^\s*(\d*)\s*\.\.\s*(\d*)\s*$")
NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.()+\-]*$")
NO_STOP = 2 ** 62  # the stop of an open range "A.."
DEFAULT_PARAMETERS = {"safeuav": {"num_filters": 10}, "timm_unet": {"encoder": "resnet18"}}


@dataclass(frozen=True)
class FramesConfig:
    """data.train / data.validation: which samples."""

    stores: list[str]
    frames: str | list[int] | None = None
    split: str | None = None
    splits_file: str | None = None


@dataclass(frozen=True)
class DataConfig:
    train: FramesConfig
    validation: FramesConfig
    inputs: list[str]
    outputs: list[str] = field(default_factory=list)
    modalities: dict = field(default_factory=dict)
    normalization: Literal["none", "min_max", "standardization"] = "standardization"
    missing: Literal["raise", "drop", "fill_zero", "fill_nan"] = "raise"
    resolution: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    num_workers: int = 2


@dataclass(frozen=True)
class ModelConfig:
    type: Literal["safeuav", "timm_unet"] = "safeuav"
    parameters: dict | None = None  # None: DEFAULT_PARAMETERS of the type
    init: str | None = None


@dataclass(frozen=True)
class LearnedMaskingConfig:
    """masking.learned: per-node probabilities fit to the outputs' validation loss (guided.py)."""

    every: int = 1      # update after every `every`-th epoch
    masks: int = 2      # base masks of each estimate
    rate: float = 0.5   # step size, in units of the mean target loss
    min: float = 0.05
    max: float = 0.95


@dataclass(frozen=True)
class MaskingConfig:
    probability: float | dict | None = None
    count: tuple[int, int] | None = None
    always_visible: list[str] = field(default_factory=list)
    never_visible: list[str] = field(default_factory=list)
    learned: bool | dict | None = None  # load_config makes it a LearnedMaskingConfig, or None (off)
    fill: Literal["zero", "mean"] = "zero"  # what a masked node's channels hold (after normalization)


@dataclass(frozen=True)
class NodeLossConfig:
    type: Literal["ce", "kl", "l1", "l2"] | None = None
    weight: float = 1.0
    temperature: float = 1.0
    class_weights: list[float] | None = None


@dataclass(frozen=True)
class LossesConfig:
    masked_only: bool = True
    nodes: dict = field(default_factory=dict)  # node -> NodeLossConfig


@dataclass(frozen=True)
class OptimizerConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class ScheduleConfig:
    type: Literal["cosine", "cyclic", "constant"] = "cosine"
    warmup_steps: int = 0
    min_lr: float = 0.0
    cycle_steps: int | None = None


class ConfigFile:
    """What a config read from a file offers (a dataclass with a `path` field)."""

    path: Path

    def resolve(self, relative: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.path.parent / p)

    def to_dict(self) -> dict:
        """The resolved config as plain JSON-able data (stored in checkpoints)."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        return out


@dataclass(frozen=True)
class TrainConfig(ConfigFile):
    output: str
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    losses: LossesConfig = field(default_factory=LossesConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: int = 10
    batch_size: int = 8
    steps_per_epoch: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    grad_clip: float | None = 1.0
    monitor: str = "auto"
    path: Path = Path("config.yaml")  # the file it was read from (not a key)

    @property
    def nodes(self) -> list[str]:
        """Every node in channel order: the inputs, then the target-only outputs."""
        return [*self.data.inputs, *self.data.outputs]

    def modality(self, node: str) -> str:
        """The store array a node is read from."""
        return self.data.modalities.get(node, node)

def parse_frames(value: str | list[int] | None) -> range | list[int] | None:
    """A config frame selection: "A..B" (end-exclusive; "A.." open) -> range, a list stays a list."""
    if value is None or isinstance(value, list):
        return value
    m = RANGE_RE.match(value)
    a, b = int(m[1] or 0), int(m[2]) if m[2] else NO_STOP
    return range(a, b)


def parse_section(cls: type, data: Any, key: str, path: Path, line: int):
    """A `cls` dataclass from a LineDict, every value checked against the field's annotation."""
    def fail(at: int, msg: str):
        raise RecipeError(f"{path}:{at}: {msg}")

    if data is None:
        data = LineDict()
        data.line, data.lines = line, {}
    if not isinstance(data, dict):
        fail(line, f"{key} must be a mapping of keys to values, got {excerpt(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    at = data.line_of if isinstance(data, LineDict) else (lambda _k: line)
    for k in data:
        if k not in fields:
            fail(at(k), f"{key + ': ' if key else ''}unknown key '{k}' (allowed: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        where = f"{key}.{name}" if key else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                fail(data.line if isinstance(data, LineDict) else line, f"{key or 'config'}: missing "
                     f"required key '{name}'")
            if dataclasses.is_dataclass(hints[name]):
                values[name] = parse_section(hints[name], None, where, path, at(name))
            continue
        value, hint = data[name], hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = parse_section(hint, value, where, path, at(name))
            continue
        try:
            checked = check_type(value, hint)  # a tuple[...] hint reads a YAML list of that length
        except TypeError as err:
            fail(at(name), f"{where} {err}")
        values[name] = tuple(checked) if _is_tuple(hint) and checked is not None else checked
    return cls(**values)


def _is_tuple(hint) -> bool:
    return any(typing.get_origin(a) is tuple for a in (hint, *typing.get_args(hint)))


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a training config. Raises RecipeError `FILE:LINE: ...`."""
    path = Path(path)
    data = load_yaml(path, "training config")
    cfg = parse_section(TrainConfig, data, "", path, 1)
    nodes = {}
    for node, spec in cfg.losses.nodes.items():
        nodes[node] = parse_section(NodeLossConfig, spec, f"losses.nodes.{node}", path,
                                    _line(data, "losses", "nodes", node))
    model = cfg.model
    if model.parameters is None:
        model = dataclasses.replace(model, parameters=dict(DEFAULT_PARAMETERS[model.type]))
    learned = None  # `learned: true` is every default, false or null is off
    if cfg.masking.learned is True or isinstance(cfg.masking.learned, dict):
        spec = data["masking"]["learned"]
        learned = parse_section(LearnedMaskingConfig, spec if isinstance(spec, dict) else None, "masking.learned",
                                path, _line(data, "masking", "learned"))
    cfg = dataclasses.replace(cfg, path=path, model=model, losses=dataclasses.replace(cfg.losses, nodes=nodes),
                              masking=dataclasses.replace(cfg.masking, learned=learned))
    check_config(cfg, data)
    return cfg


def _line(data: LineDict, *keys) -> int:
    """The line of a nested key (the deepest one that exists)."""
    line, node = data.line, data
    for k in keys:
        if not isinstance(node, LineDict) or k not in node:
            break
        line, node = node.line_of(k), node[k]
    return line


def check_config(cfg: TrainConfig, data: LineDict) -> None:
    """Checks that span keys: node names, masking lists, loss nodes, sizes, ranges."""
    path = cfg.path

    def fail(keys: tuple, msg: str):
        raise RecipeError(f"{path}:{_line(data, *keys)}: {msg}")

    d = cfg.data
    if not d.inputs:
        fail(("data", "inputs"), "data.inputs must name at least one node (a modality the model sees)")
    nodes = cfg.nodes
    for node in nodes:
        if not isinstance(node, str) or not NODE_RE.match(node):
            fail(("data", "inputs" if node in d.inputs else "outputs"), f"invalid node name {excerpt(node)}")
    if len(set(nodes)) != len(nodes):
        twice = sorted({n for n in nodes if nodes.count(n) > 1})
        fail(("data", "outputs"), f"nodes {twice} are listed twice (inputs and outputs are one list)")
    for node, modality in d.modalities.items():
        if node not in nodes:
            fail(("data", "modalities", node), f"data.modalities: '{node}' is not a node (inputs: "
                                               f"{d.inputs}, outputs: {d.outputs})")
        if not isinstance(modality, str):
            fail(("data", "modalities", node), f"data.modalities.{node} must be a store modality name")
    for node in d.inputs:
        for out in d.outputs:
            if cfg.modality(node) == cfg.modality(out):
                fail(("data", "inputs"), f"data.inputs: '{node}' reads '{cfg.modality(node)}', the modality of the "
                                         f"output '{out}': the model would see its answer; remove it from data.inputs")
    sources = [cfg.modality(n) for n in nodes]
    if len(set(sources)) != len(sources):
        fail(("data", "modalities"), f"two nodes read the same store modality ({sources})")
    for split in ("train", "validation"):
        sel: FramesConfig = getattr(d, split)
        if not sel.stores:
            fail(("data", split, "stores"), f"data.{split}.stores must list at least one store")
        if isinstance(sel.frames, str) and not RANGE_RE.match(sel.frames):
            fail(("data", split, "frames"), f"data.{split}.frames must be A..B (end-exclusive), A.., ..B "
                                            f"or a list of frame numbers, got {excerpt(sel.frames)}")
        if isinstance(sel.frames, str):
            r = parse_frames(sel.frames)
            if r.start >= r.stop:
                fail(("data", split, "frames"), f"data.{split}.frames {sel.frames} selects no frame")
        if sel.splits_file is not None and sel.split is None:
            fail(("data", split, "splits_file"), f"data.{split}.splits_file needs data.{split}.split")
    for key in ("resolution", "crop"):
        size = getattr(d, key)
        if size is not None and min(size) < 8:
            fail(("data", key), f"data.{key} must be [HEIGHT, WIDTH], both at least 8, got {list(size)}")
    if d.crop and d.resolution and (d.crop[0] > d.resolution[0] or d.crop[1] > d.resolution[1]):
        fail(("data", "crop"), f"data.crop {list(d.crop)} is larger than data.resolution {list(d.resolution)}")
    if d.num_workers < 0:
        fail(("data", "num_workers"), "data.num_workers must be >= 0")

    m = cfg.masking
    for key in ("always_visible", "never_visible"):
        for node in getattr(m, key):
            if node not in nodes:
                fail(("masking", key), f"masking.{key}: '{node}' is not a node ({nodes})")
            if key == "always_visible" and node in d.outputs:
                fail(("masking", key), f"masking.always_visible: '{node}' is an output (target-only) node")
    if m.probability is not None and m.count is not None:
        fail(("masking", "count"), "masking: give probability or count, not both")
    if isinstance(m.probability, dict):
        for node, p in m.probability.items():
            if node not in nodes:
                fail(("masking", "probability", node), f"masking.probability: '{node}' is not a node")
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
                fail(("masking", "probability", node), f"masking.probability.{node} must be in [0, 1]")
    elif m.probability is not None and not 0 <= m.probability <= 1:
        fail(("masking", "probability"), f"masking.probability must be in [0, 1], got {m.probability}")
    try:
        mask_policy(cfg)
    except ValueError as err:
        fail(("masking",), f"masking: {err}")

    for node, spec in cfg.losses.nodes.items():
        if node not in nodes:
            fail(("losses", "nodes", node), f"losses.nodes: '{node}' is not a node ({nodes})")
        if spec.weight < 0 or spec.temperature <= 0:
            fail(("losses", "nodes", node), f"losses.nodes.{node}: weight must be >= 0 and temperature > 0")

    if m.learned is not None:
        check_learned(cfg, fail)

    for key in ("in_channels", "out_channels"):
        if key in cfg.model.parameters:
            fail(("model", "parameters", key), f"model.parameters.{key} is set by the trainer from the "
                                               f"nodes' channels; remove it")
    o, s = cfg.optimizer, cfg.schedule
    if o.lr <= 0 or o.weight_decay < 0 or not all(0 <= b < 1 for b in o.betas):
        fail(("optimizer",), "optimizer: lr must be > 0, weight_decay >= 0, betas in [0, 1)")
    if s.warmup_steps < 0 or not 0 <= s.min_lr <= o.lr:
        fail(("schedule",), f"schedule: warmup_steps must be >= 0 and min_lr in [0, optimizer.lr = {o.lr}]")
    if s.type == "cyclic" and (s.cycle_steps is None or s.cycle_steps < 2):
        fail(("schedule", "cycle_steps"), "schedule.cycle_steps (>= 2) is required for a cyclic schedule")
    for key, low in (("epochs", 1), ("batch_size", 1), ("steps_per_epoch", 1)):
        v = getattr(cfg, key)
        if v is not None and v < low:
            fail((key,), f"{key} must be >= {low}, got {v}")
    if not DEVICE_RE.match(cfg.device):
        fail(("device",), f"device must be auto, cpu, mps, cuda or cuda:N, got {excerpt(cfg.device)}")
    if cfg.grad_clip is not None and cfg.grad_clip <= 0:
        fail(("grad_clip",), "grad_clip must be > 0 (or null for no clipping)")
    if not monitor_ok(cfg.monitor, nodes):
        fail(("monitor",), f"monitor must be 'auto', 'loss', '<node>.loss', '<node>.miou' or "
                           f"'<node>.miou_scenes' for a node of {nodes}, got {excerpt(cfg.monitor)}")


def check_learned(cfg: TrainConfig, fail) -> None:
    """masking.learned: its values, and a policy it can learn (free nodes, probabilities, targets)."""
    m, learned = cfg.masking, cfg.masking.learned
    if m.count is not None:
        fail(("masking", "learned"), "masking.learned needs the probability policy; remove masking.count")
    for key in ("every", "masks"):
        if getattr(learned, key) < 1:
            fail(("masking", "learned", key), f"masking.learned.{key} must be >= 1, got {getattr(learned, key)}")
    if learned.rate <= 0:
        fail(("masking", "learned", "rate"), f"masking.learned.rate must be > 0, got {learned.rate}")
    if not 0 <= learned.min <= learned.max <= 1:
        fail(("masking", "learned", "max" if 0 <= learned.min <= 1 else "min"),
             f"masking.learned: min and max must satisfy 0 <= min <= max <= 1, got min {learned.min}, "
             f"max {learned.max}")
    policy = mask_policy(cfg)
    if not policy.free:
        fail(("masking", "learned"), "masking.learned needs a free node (neither always_visible, never_visible "
                                     "nor an output) to learn a probability for")
    for node in policy.free:
        p = policy.node_probability(node)
        if not learned.min <= p <= learned.max:
            fail(("masking", "probability"), f"masking.probability of '{node}' is {p}, outside masking.learned "
                                             f"[min, max] = [{learned.min}, {learned.max}]")
    if not learned_targets(cfg):
        fail(("masking", "learned"), "masking.learned lowers the outputs' validation loss: it needs data.outputs "
                                     "with a loss weight > 0")


def learned_targets(cfg: TrainConfig) -> list[str]:
    """The nodes whose loss masking.learned lowers: the outputs with a loss weight > 0."""
    return [n for n in cfg.data.outputs if (cfg.losses.nodes[n].weight if n in cfg.losses.nodes else 1.0) > 0]


MONITORED = ("loss", "miou", "miou_scenes")  # <node>.<what>; miou figures are maximised


def monitor_ok(monitor: str, nodes: list[str]) -> bool:
    if monitor in ("loss", "auto"):
        return True
    node, _, what = monitor.rpartition(".")
    return node in nodes and what in MONITORED


def mask_policy(cfg: TrainConfig):
    """The `MaskPolicy` of a config: outputs are never visible; probability 0.5 when unset."""
    from video_pipeline.phgmae.masking import MaskPolicy

    m = cfg.masking
    never = tuple(dict.fromkeys([*m.never_visible, *cfg.data.outputs]))
    probability = m.probability if m.probability is not None or m.count is not None else 0.5
    return MaskPolicy(tuple(cfg.nodes), probability=probability, count=m.count,
                      always_visible=tuple(m.always_visible), never_visible=never)
