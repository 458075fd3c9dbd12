"""The PHG-MAE step, reusable by training, ensembles and distillation.

- `NodeLayout`: the nodes in channel order, what each holds (class map, soft classes, regression)
  and its channel slice; written into and read back from checkpoints.
- `node_inputs` / `node_targets`: a batch of `StoreDataset` items -> the model's input float32
  [B, C, H, W] (class maps one-hot, missing values 0) and per-node targets.
- `apply_mask`, `forward_nodes`: zero-fill masked nodes, run the model, split its output per node.
- `node_losses`: every node's loss, on all samples or only where it was masked.
- `train_one_epoch`, `evaluate`: the loops `train.py` calls once per epoch.
- `lr_at`: warmup + cosine / cyclic / constant learning rate at a step.
- `transfer_weights`: start a model from a checkpoint whose nodes differ (matching nodes' channels
  are copied, new ones keep their fresh initialisation).
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from video_pipeline.errors import VreError
from video_pipeline.phgmae.losses import LossSpec, combine, node_loss
from video_pipeline.phgmae.masking import MaskPolicy, sample_mask
from video_pipeline.phgmae.metrics import ClassMetrics
from video_pipeline.phgmae.model import ModelMeta, build_model

KINDS = ("class", "soft", "regression")


class TrainingError(VreError):
    """Training cannot go on (non-finite loss, incompatible checkpoint)."""


@dataclass(frozen=True)
class Node:
    """One hypergraph node.

    kind: "class" (a stored class map: target int64 labels [B, H, W], input one-hot, K channels),
      "soft" (stored class probabilities [B, K, H, W]), or "regression" (any other float channels).
    modality: the store array it is read from.
    """

    name: str
    kind: str
    channels: int
    modality: str
    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"node '{self.name}': kind must be one of {KINDS}, got {self.kind!r}")

    def describe(self) -> dict:
        return {"kind": self.kind, "channels": self.channels, "modality": self.modality,
                "classes": list(self.classes), "palette": [list(c) for c in self.palette]}


@dataclass(frozen=True)
class NodeLayout:
    """Nodes in channel order (inputs first, then target-only outputs); input and output share it.

    statistics: node -> [min, max, mean, std] per-channel lists in raw units (the checkpoint format).
    normalization: how non-class nodes were normalized: none | min_max | standardization.
    size: (H, W) of the frames the model learned from (crops keep the scale of these frames).
    fill: node -> per-channel values a masked node's channels take, in the model's input space
      (`masking.fill: mean`: its mean over the training frames; class nodes: the class shares);
      None, or a node it does not list: zeros.
    """

    nodes: tuple[Node, ...]
    outputs: tuple[str, ...] = ()
    statistics: Mapping[str, Sequence[Sequence[float]]] | None = None
    normalization: str = "standardization"
    size: tuple[int, int] | None = None
    fill: Mapping[str, Sequence[float]] | None = None

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def node(self, name: str) -> Node:
        return self.nodes[self.names.index(name)]

    @cached_property
    def meta(self) -> ModelMeta:
        return ModelMeta(tuple(self.names), {n.name: n.channels for n in self.nodes},
                         dict(self.statistics or {}), self.size)

    def slice(self, name: str) -> slice:
        return self.meta.slice(name)

    @property
    def total_channels(self) -> int:
        return sum(n.channels for n in self.nodes)

    @cached_property
    def fill_vector(self) -> torch.Tensor | None:
        """float32 [C]: the value of each channel when its node is masked (None: all zeros)."""
        if not self.fill:
            return None
        return torch.tensor([float(v) for n in self.nodes for v in self.fill.get(n.name, [0.0] * n.channels)])

    @cached_property
    def channel_owner(self) -> torch.Tensor:
        """int64 [C]: the index of the node each channel belongs to."""
        return torch.repeat_interleave(torch.arange(len(self.nodes)),
                                       torch.tensor([n.channels for n in self.nodes]))

    def cfg(self, model_cfg: Mapping, train_cfg: Mapping | None = None) -> dict:
        """The checkpoint's `hyper_parameters.cfg` (the released PHG-MAE-Distil format, plus the
        node descriptions under data.parameters.nodes and the full training config under `train`)."""
        h, w = self.size or (0, 0)
        return {"model": {"type": model_cfg["type"], "parameters": dict(model_cfg["parameters"]),
                          "hparams": {"data_shape": {n.name: [n.channels, h, w] for n in self.nodes},
                                      "tasks": self.names}},
                "data": {"parameters": {"task_names": self.names, "normalization": self.normalization,
                                        "outputs": list(self.outputs),
                                        **({"fill": {k: list(v) for k, v in self.fill.items()}} if self.fill else {}),
                                        "nodes": {n.name: n.describe() for n in self.nodes}}},
                "train": dict(train_cfg or {})}

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping) -> "NodeLayout":
        """The layout a checkpoint was trained with.

        Checkpoints of `vre train` describe their nodes (data.parameters.nodes, outputs). Released
        PHG-MAE checkpoints (a Lightning-style cfg) describe none: there a node whose metrics list
        class names (train.metrics.metrics_overwrites.<node>: mean_iou with `classes`, as many as
        its channels) is a class node, the masking's `excluded_tasks` are the outputs, and every
        other node is a regression node; each is read from the store modality of its own name.
        """
        from video_pipeline.phgmae.model import meta_from_cfg

        cfg = ckpt["hyper_parameters"]["cfg"]
        meta = meta_from_cfg(cfg, ckpt["hyper_parameters"].get("statistics"))
        params = cfg.get("data", {}).get("parameters", {})
        described = params.get("nodes") or {}
        outputs = tuple(params.get("outputs") or ())
        released = released_masking(cfg) if not described else None
        if released is not None:
            outputs = tuple(n for n in released.get("never_visible", ()) if n in meta.nodes)
        nodes = []
        for name in meta.nodes:
            d = described.get(name) or (released_node(cfg, name, meta.channels[name]) if not described else {})
            nodes.append(Node(name, d.get("kind", "regression"), meta.channels[name], d.get("modality", name),
                              tuple(d.get("classes") or ()), tuple(tuple(c) for c in d.get("palette") or ())))
        return cls(tuple(nodes), outputs, dict(meta.statistics),
                   params.get("normalization", "standardization"), meta.train_size, params.get("fill") or None)


def released_node(cfg: Mapping, name: str, channels: int) -> dict:
    """{kind: class, classes} for a node of a released cfg whose metrics name `channels` classes
    (train.metrics.metrics_overwrites.<name>: [{name: mean_iou, parameters: {classes}}]); else {}."""
    overwrites = (((cfg.get("train") or {}).get("metrics") or {}).get("metrics_overwrites") or {}).get(name) or ()
    for metric in overwrites:
        classes = ((metric or {}).get("parameters") or {}).get("classes") if isinstance(metric, Mapping) else None
        if classes and len(classes) == channels:
            return {"kind": "class", "classes": [str(c) for c in classes]}
    return {}


def released_masking(cfg: Mapping) -> dict | None:
    """The masking policy a released cfg records (train.algorithm.masking.parameters), in the form
    of `vre train`'s masking section: drop_task_percent -> probability (a share), included_tasks ->
    always_visible, excluded_tasks -> never_visible. None when the cfg records none."""
    algorithm = (cfg.get("train") or {}).get("algorithm") or {}
    masking = algorithm.get("masking") if isinstance(algorithm, Mapping) else None
    p = (masking or {}).get("parameters") if isinstance(masking, Mapping) else None
    if not isinstance(p, Mapping) or "drop_task_percent" not in p:
        return None
    return {"probability": float(p["drop_task_percent"]) / 100.0,
            "always_visible": [str(n) for n in p.get("included_tasks") or ()],
            "never_visible": [str(n) for n in p.get("excluded_tasks") or ()]}


def layout_from_dataset(dataset, nodes: Sequence[str], outputs: Sequence[str]) -> NodeLayout:
    """The layout of `nodes` read by a `StoreDataset` whose modalities are those nodes' sources, in
    the same order; statistics in the checkpoint format (identity for class and soft nodes)."""
    out = []
    for name, modality in zip(nodes, dataset.modalities):
        spec = dataset.specs[modality]
        if spec.class_map:
            if not spec.classes:
                raise VreError(f"node '{name}': the class map '{modality}' has no class names in its attrs")
            kind, channels = "class", len(spec.classes)
        elif spec.kind == "semantic":
            kind, channels = "soft", spec.channels
        else:
            kind, channels = "regression", spec.channels
        out.append(Node(name, kind, channels, modality, spec.classes, spec.palette))
    stats = {}
    for node in out:
        s = dataset.statistics.get(node.modality)
        if s is None:  # not normalized: the affine that does nothing
            c = node.channels
            stats[node.name] = [[0.0] * c, [1.0] * c, [0.0] * c, [1.0] * c]
        else:
            stats[node.name] = [list(map(float, s[k])) for k in ("min", "max", "mean", "std")]
    modes = {dataset.normalization[n.modality] for n in out if n.kind == "regression"}
    return NodeLayout(tuple(out), tuple(outputs), stats, modes.pop() if len(modes) == 1 else "none",
                      tuple(dataset.size))


def dataset_statistics(layout: NodeLayout, names: Iterable[str]) -> dict[str, dict]:
    """Checkpoint statistics of nodes `names` in the dataset's form {modality: {min, max, mean, std}}."""
    out = {}
    for name in names:
        s = (layout.statistics or {})[name]
        out[layout.node(name).modality] = dict(zip(("min", "max", "mean", "std"), s))
    return out


# ---------------------------------------------------------------------------------------- batches
def node_inputs(batch: Mapping, layout: NodeLayout, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The model input float32 [B, C, H, W] on `device` and present bool [B, M].

    Class maps become one-hot (all zero where unlabelled); missing values (NaN) become 0, the
    value of a masked node. Mask absent nodes (~present) like masked ones (see `forward_nodes`).
    """
    parts = []
    for node in layout.nodes:
        t = batch[node.modality].to(device, non_blocking=True)
        if node.kind == "class":
            labelled = (t >= 0) & (t < node.channels)                                # [B, H, W]
            t = F.one_hot(torch.where(labelled, t, 0), node.channels).permute(0, 3, 1, 2)
            t = t * labelled.unsqueeze(1)
        parts.append(t.float().nan_to_num(0.0, 0.0, 0.0))
    return torch.cat(parts, 1), batch["present"].to(device, non_blocking=True).bool()


def node_targets(batch: Mapping, layout: NodeLayout, device) -> dict[str, torch.Tensor]:
    """node -> target on `device`: labels int64 [B, H, W] (255 = none) or float [B, C, H, W] (NaN = none)."""
    return {n.name: batch[n.modality].to(device, non_blocking=True) for n in layout.nodes}


def apply_mask(x: torch.Tensor, mask: torch.Tensor, layout: NodeLayout) -> torch.Tensor:
    """x [B, C, H, W] with the channels of masked nodes (mask bool [B, M], True = masked) set to 0,
    or to `layout.fill`'s values when it has them."""
    hidden = mask[:, layout.channel_owner.to(mask.device)]                          # [B, C]
    if layout.fill_vector is None:
        return x.masked_fill(hidden[:, :, None, None], 0.0)
    fill = layout.fill_vector.to(x.device, x.dtype).view(1, -1, 1, 1)
    return torch.where(hidden[:, :, None, None], fill, x)


def mean_fill(dataset, layout: NodeLayout, samples: int = 32) -> dict[str, list[float]]:
    """node -> its per-channel mean in the model's input space over up to `samples` items of a
    `StoreDataset` spread over it (missing values left out): class nodes the share of each class
    among labelled pixels, soft and regression nodes the mean of their (normalized) values."""
    idx = np.linspace(0, len(dataset) - 1, min(samples, len(dataset))).round().astype(int)
    batch = torch.utils.data.default_collate([dataset[int(i)] for i in idx])
    if getattr(dataset, "compact", False):
        batch = dataset.to_float(batch, torch.device("cpu"))
    fill = {}
    for m, node in enumerate(layout.nodes):
        t = batch[node.modality][batch["present"][:, m].bool()]
        if node.kind == "class":
            t = t.long()
            counts = torch.bincount(t[(t >= 0) & (t < node.channels)], minlength=node.channels).double()
            values = counts / counts.sum().clamp_min(1)
        else:
            ok = torch.isfinite(t).all(1, keepdim=True)                                # [N, 1, H, W]
            values = (t.double().nan_to_num(0) * ok).sum((0, 2, 3)) / ok.sum((0, 2, 3)).clamp_min(1)
        fill[node.name] = [float(v) for v in values]
    return fill


def forward_nodes(model: nn.Module, x: torch.Tensor, mask: torch.Tensor,
                  layout: NodeLayout) -> dict[str, torch.Tensor]:
    """Run the model on x [B, C, H, W] with masked nodes zero-filled: node -> prediction [B, C_n, H, W]
    (logits for class and soft nodes, normalized values for regression nodes)."""
    y = model(apply_mask(x, mask, layout))
    return {n.name: y[:, layout.slice(n.name)] for n in layout.nodes}


def node_losses(preds: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                mask: torch.Tensor, present: torch.Tensor, specs: Mapping[str, LossSpec],
                only_masked: bool, layout: NodeLayout) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """node -> (mean loss, weight) over samples where the target is present (and, if `only_masked`,
    where the node was masked)."""
    out = {}
    for m, node in enumerate(layout.names):
        selected = present[:, m] & (mask[:, m] if only_masked else True)
        out[node] = node_loss(specs[node], preds[node], targets[node], selected)
    return out


def target_labels(node: Node, target: torch.Tensor) -> torch.Tensor:
    """Class labels int64 [B, H, W] of a class or soft target (255 where there is none)."""
    if node.kind == "class":
        return target.long()
    valid = torch.isfinite(target).all(1) & (target.nan_to_num(0).sum(1) > 0)
    return torch.where(valid, target.nan_to_num(0).argmax(1), 255)


# ---------------------------------------------------------------------------------------- schedule
def lr_at(step: int, total_steps: int, lr: float, schedule) -> float:
    """Learning rate at optimizer step `step` (0-based) of `total_steps`.

    Linear warmup over `schedule.warmup_steps`, then: cosine from lr down to min_lr at the last
    step; cyclic: triangles between min_lr and lr, `cycle_steps` long; constant: lr.
    """
    warm = schedule.warmup_steps
    if step < warm:
        return lr * (step + 1) / warm
    t = step - warm
    if schedule.type == "cosine":
        progress = min(t / max(total_steps - warm - 1, 1), 1.0)
        return schedule.min_lr + 0.5 * (lr - schedule.min_lr) * (1 + math.cos(math.pi * progress))
    if schedule.type == "cyclic":
        phase = (t % schedule.cycle_steps) / schedule.cycle_steps
        return schedule.min_lr + (lr - schedule.min_lr) * (1 - abs(2 * phase - 1))
    return lr


# ---------------------------------------------------------------------------------------- loops
@dataclass
class StepSetup:
    """What a training step needs besides the batch."""

    layout: NodeLayout
    policy: MaskPolicy
    specs: Mapping[str, LossSpec]
    only_masked: bool
    device: torch.device
    amp_dtype: torch.dtype | None = None   # autocast dtype on CUDA (None: full precision)

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


class _Sums:
    """Per-node running sums of loss * weight and weight, on the device (no per-step sync)."""

    def __init__(self):
        self.num: dict[str, torch.Tensor] = {}
        self.den: dict[str, torch.Tensor] = {}
        self.total, self.steps = 0.0, 0

    def add(self, losses, total: float) -> None:
        for n, (v, c) in losses.items():
            self.num[n] = self.num.get(n, 0.0) + v.detach() * c
            self.den[n] = self.den.get(n, 0.0) + c
        self.total += total
        self.steps += 1

    def means(self) -> dict[str, float | None]:
        return {n: (float(self.num[n] / self.den[n]) if float(self.den[n]) > 0 else None) for n in self.num}


@dataclass
class MaskedPass:
    """A batch through the model under a sampled mask: the batch (after `prepare`), present and mask
    bool [B, M] (nodes in layout order), targets and predictions per node, and the node losses."""

    batch: Mapping
    present: torch.Tensor
    mask: torch.Tensor
    targets: dict
    preds: dict
    losses: dict


def masked_pass(model: nn.Module, batch: Mapping, setup: StepSetup, generator: torch.Generator,
                only_masked: bool, prepare=None) -> MaskedPass:
    """The step training and evaluation share: inputs, targets and a mask drawn from `generator`,
    a forward pass with the masked and absent nodes hidden, the node losses (of the masked nodes
    only, or of every present one)."""
    if prepare is not None:
        batch = prepare(batch, setup.device)
    x, present = node_inputs(batch, setup.layout, setup.device)
    targets = node_targets(batch, setup.layout, setup.device)
    mask = sample_mask(x.shape[0], setup.policy, generator).to(setup.device)
    with setup.autocast():
        preds = forward_nodes(model, x, mask | ~present, setup.layout)
    losses = node_losses(preds, targets, mask, present, setup.specs, only_masked, setup.layout)
    return MaskedPass(batch, present, mask, targets, preds, losses)


def train_one_epoch(model: nn.Module, batches: Iterable, setup: StepSetup, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, lr_for_step, step: int, generator: torch.Generator,
                    grad_clip: float | None, where: str = "", prepare=None) -> tuple[dict, int]:
    """One pass over `batches`; returns the epoch's figures and the next step.

    `prepare(batch, device)`, if given, turns each batch into the float form on the device (the
    `to_float` of a compact StoreDataset); its time counts as compute, not as waiting for data.

    Figures: loss (mean of the step losses), nodes (mean loss per node), steps, samples, seconds,
    data_seconds (time waiting for the next batch) and first_step ({samples, seconds,
    data_seconds} of the first step alone: it includes starting the loader's workers).

    Masks come from `generator`; the learning rate of each step from `lr_for_step(step)`.
    Raises TrainingError on a non-finite loss, naming the step and the node losses.
    """
    model.train()
    sums = _Sums()
    samples, data_s, t0, first = 0, 0.0, time.perf_counter(), None
    it = iter(batches)
    while True:
        t_wait = time.perf_counter()
        batch = next(it, None)
        data_s += time.perf_counter() - t_wait
        if batch is None:
            break
        lr = lr_for_step(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        p = masked_pass(model, batch, setup, generator, setup.only_masked, prepare)
        losses = p.losses
        loss = combine(losses, setup.specs)
        value = loss.item()
        if not math.isfinite(value):
            parts = ", ".join(f"{n} {v.item():.4g}" for n, (v, _) in losses.items())
            raise TrainingError(f"{where}step {step}: the loss is {value} ({parts}); lower optimizer.lr, "
                                f"set grad_clip, or check the data for extreme values")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        sums.add(losses, value)
        samples += p.present.shape[0]
        step += 1
        if first is None:
            first = {"samples": samples, "seconds": time.perf_counter() - t0, "data_seconds": data_s}
    return {"loss": sums.total / max(sums.steps, 1), "nodes": sums.means(), "steps": sums.steps,
            "samples": samples, "seconds": time.perf_counter() - t0, "data_seconds": data_s,
            "first_step": first or {"samples": 0, "seconds": 0.0, "data_seconds": 0.0}}, step


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, setup: StepSetup, generator: torch.Generator,
             prepare=None) -> dict:
    """Losses and class metrics over `batches`, masks from `generator` (seed it the same way every
    time to compare epochs). Returns {loss, nodes: {node: {loss, [miou, mf1, iou, f1, scene_miou,
    miou_scenes]}}}. Only hidden nodes are scored, whatever `setup.only_masked` says for training:
    a node scored where it was visible would reward copying the input (an identity network would
    look perfect on any input node). `prepare`: as in `train_one_epoch`."""
    model.eval()
    sums = _Sums()
    metrics = {n.name: ClassMetrics(n.classes) for n in setup.layout.nodes if n.kind in ("class", "soft")}
    for batch in batches:
        p = masked_pass(model, batch, setup, generator, True, prepare)
        sums.add(p.losses, float(combine(p.losses, setup.specs)))
        for m, node in enumerate(setup.layout.nodes):
            if node.name not in metrics:
                continue
            selected = p.present[:, m] & p.mask[:, m]
            labels = target_labels(node, p.targets[node.name])[selected]
            scenes = [s for s, keep in zip(p.batch["store"], selected.tolist()) if keep]
            metrics[node.name].update(scenes, p.preds[node.name][selected].argmax(1), labels)
    nodes = {n: {"loss": v} for n, v in sums.means().items()}
    for name, m in metrics.items():
        nodes[name].update(m.summary())
    return {"loss": sums.total / max(sums.steps, 1), "nodes": nodes}


# ---------------------------------------------------------------------------------------- weights
def _channel_dims(model_cfg: Mapping, in_channels: int) -> dict[str, tuple[str, int]]:
    """param name -> ("in" | "out", dim) for parameters whose size follows the in/out channels.

    Found by building the model on the meta device with one more input, then one more output,
    channel and comparing shapes: no architecture-specific key names needed.
    """
    def shapes(c_in: int, c_out: int) -> dict[str, torch.Size]:
        params = {**model_cfg["parameters"], "in_channels": c_in, "out_channels": c_out}
        with torch.device("meta"):
            model = build_model({"type": model_cfg["type"], "parameters": params})
        return {k: v.shape for k, v in model.state_dict().items()}

    base = shapes(in_channels, in_channels)
    out = {}
    for which, other in (("in", shapes(in_channels + 1, in_channels)), ("out", shapes(in_channels, in_channels + 1))):
        for key, shape in base.items():
            dims = [d for d, (a, b) in enumerate(zip(shape, other[key])) if a != b]
            if len(dims) == 1:
                out[key] = (which, dims[0])
    return out


def transfer_weights(model: nn.Module, model_cfg: Mapping, layout: NodeLayout, ckpt: Mapping,
                     where: str = "model.init") -> list[str]:
    """Load a checkpoint's weights into `model` (built for `layout`), node by node.

    Every parameter must have the checkpoint's shape, except along the channel dimensions of the
    input and output: there the channels of nodes both layouts share are copied (by name) and
    those of new nodes keep the model's initialisation. Returns the shared nodes.
    Raises TrainingError if the architectures differ or no node is shared.
    """
    src_layout = NodeLayout.from_checkpoint(ckpt)
    src = ckpt["state_dict"]
    shared = [n for n in layout.names if n in src_layout.names]
    if not shared:
        raise TrainingError(f"{where}: the checkpoint's nodes {src_layout.names} share none with "
                            f"{layout.names}")
    for name in shared:
        if layout.node(name).channels != src_layout.node(name).channels:
            raise TrainingError(f"{where}: node '{name}' has {src_layout.node(name).channels} channels in "
                                f"the checkpoint but {layout.node(name).channels} here; rename the node "
                                f"to train it from scratch")
    dims = _channel_dims(model_cfg, layout.total_channels)
    dst_idx = torch.cat([torch.arange(layout.slice(n).start, layout.slice(n).stop) for n in shared])
    src_idx = torch.cat([torch.arange(src_layout.slice(n).start, src_layout.slice(n).stop) for n in shared])
    state = model.state_dict()
    for key, dst in state.items():
        if key not in src:
            raise TrainingError(f"{where}: the checkpoint has no '{key}': it is another architecture "
                                f"than model {dict(model_cfg)}")
        value = src[key]
        if key in dims:
            _, d = dims[key]
            ok = (value.dim() == dst.dim() and value.shape[d] == src_layout.total_channels
                  and all(a == b for i, (a, b) in enumerate(zip(value.shape, dst.shape)) if i != d))
            if ok:
                merged = dst.clone()
                merged.index_copy_(d, dst_idx, value.index_select(d, src_idx).to(dst.dtype))
                state[key] = merged
                continue
        elif value.shape == dst.shape:
            state[key] = value
            continue
        raise TrainingError(f"{where}: '{key}' is {list(value.shape)} in the checkpoint but "
                            f"{list(dst.shape)} in model {dict(model_cfg)}; use the checkpoint's model "
                            f"type and parameters")
    model.load_state_dict(state)
    return shared
