"""`vre ensemble CKPT STORE...`: inference-time ensembles of a PHG-MAE checkpoint over random
hyperedges, written back into the stores as new modalities.

For every frame the model runs K times, each pass seeing one hyperedge (a set of visible nodes).
Pass 0 sees every available input (the full hyperedge), passes 1..K-1 subsets drawn with the
checkpoint's own training masking policy. The predicted nodes, the checkpoint's outputs and every
unavailable input (left out by `--available`, absent from a store, or not computed at that frame) are
masked in every pass, so each pass is a hyperedge the model was trained to complete. One set of K
masks serves every frame and store: the ensemble is a fixed function of its inputs, which is what
temporal consistency asks for and what gives per-pass weights a meaning. The K passes of a batch of
B frames run as one batch [K*B, C, H, W].

Aggregation of the passes values [K, B, C, H, W] (class nodes: per-pass softmax probabilities;
regression nodes: values in the node's raw units):
  mean     average (class: of probabilities)
  median   per-channel median over passes (class: renormalized to sum to 1)
  vote     share of the passes whose top class is each class (class nodes only)
  learned  weighted mean, one weight per pass (softmax of K logits), fit on validation frames
           against the node's stored target (class: log-likelihood, regression: squared error)
Uncertainty: entropy (nats) of the aggregated class distribution; for regression the (weighted)
variance over passes, averaged over channels, in the node's units squared.

Written per predicted node: `<name>` (class: float16 probabilities [T, H, W, K], kind semantic;
regression: float16 [T, H, W, C] with the kind of the node's source modality) and
`<name>_uncertainty` (float16 [T, H, W, 1], kind features). Their attrs carry the provenance
(type phgmae/ensemble; weights: the checkpoint's path and sha256; params: node, k, seed,
aggregation, available, the visible nodes of every pass, the pass weights, min_confidence) so they
can be previewed, exported and trained on like any expert output.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from video_pipeline.errors import StoreError, VreError
from video_pipeline.expert import OutputSpec
from video_pipeline.phgmae.engine import NodeLayout, target_labels
from video_pipeline.phgmae.inference import (Loaded, ensemble_masks, ensemble_policy, frame_batches, input_nodes,
                                             is_class, load, pick_device, run_passes, select_positions, to_values,
                                             visible_nodes)
from video_pipeline.quantities import quantity_of
from video_pipeline.store import ArraySpec, VideoStore, shard_groups

AGGREGATIONS = ("mean", "median", "vote", "learned")
TYPE = "phgmae/ensemble"
UNCERTAINTY_SUFFIX = "_uncertainty"
FIT_STRIDE = 4          # learned weights: every 4th pixel of every 4th row of the validation frames


# ---------------------------------------------------------------------------------------- aggregation
def _middle(values: torch.Tensor) -> torch.Tensor:
    """Median over dim 0 (the mean of the two middle values for an even count)."""
    s = values.sort(0).values
    k = values.shape[0]
    return (s[(k - 1) // 2] + s[k // 2]) / 2


def aggregate(values: torch.Tensor, classes: bool, how: str,
              weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine K passes: values [K, B, C, H, W] -> (result [B, C, H, W], uncertainty [B, 1, H, W]).

    classes: values are per-pass probabilities (sum 1 over C); the result is a distribution too and
      the uncertainty its entropy in nats (0 .. log C).
    otherwise: values are regression outputs; the uncertainty is the variance over passes (weighted
      like the mean; about the mean), averaged over channels.
    how: mean | median | vote (see the module docstring); weights float [K] (non-negative, summing to
      1) turn the mean into a weighted mean; None: uniform.
    """
    k = values.shape[0]
    w = (torch.full((k,), 1.0 / k, device=values.device) if weights is None
         else weights.to(values.device, values.dtype)).view(k, 1, 1, 1, 1)
    if weights is not None and how != "mean":
        raise VreError(f"pass weights apply to the mean, not to the {how}")
    if how == "mean":
        result = (w * values).sum(0)
    elif how == "median":
        result = _middle(values)
        if classes:
            total = result.sum(1, keepdim=True)
            result = torch.where(total > 0, result / total.clamp_min(1e-12),
                                 torch.full_like(result, 1.0 / values.shape[2]))
    elif how == "vote":
        if not classes:
            raise VreError("vote aggregation needs a class node; use mean or median for regression")
        top = values.argmax(2)                                                        # [K, B, H, W]
        result = F.one_hot(top, values.shape[2]).to(values.dtype).mean(0).permute(0, 3, 1, 2)
    else:
        raise VreError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {how!r}")
    if classes:
        uncertainty = -(result * result.clamp_min(1e-12).log()).sum(1, keepdim=True)
    else:
        uncertainty = (w * (values - result).square()).sum(0).mean(1, keepdim=True)
    return result, uncertainty


def learn_weights(values: torch.Tensor, target: torch.Tensor, classes: bool, steps: int = 500) -> torch.Tensor:
    """Per-pass weights float [K] (non-negative, sum 1) that fit the weighted mean to the target.

    values: class probabilities [K, P, C] or regression values [K, P, C] over P sample pixels;
    target: class labels int64 [P] or values [P, C]. Both problems are convex on the simplex:
    classes maximize the log-likelihood of the mixture sum_k w_k p_k(label) by EM (multiplicative
    updates that never lower it); regression minimizes the squared error of sum_k w_k y_k by
    projected gradient descent. Start: uniform weights; deterministic.
    """
    k = values.shape[0]
    w = torch.full((k,), 1.0 / k, dtype=torch.float64)
    if classes:
        q = values.gather(2, target.view(1, -1, 1).expand(k, -1, 1)).squeeze(2).double()  # [K, P]
        for _ in range(steps):
            w = w * (q / (w @ q).clamp_min(1e-12)).mean(1)
            w = w / w.sum()
        return w.float()
    y = values.reshape(k, -1).double()                                                    # [K, P*C]
    t = target.reshape(-1).double()
    gram, corr = y @ y.T / len(t), y @ t / len(t)             # loss = w'Gw - 2c'w + const
    step = 0.5 / float(torch.linalg.eigvalsh(gram).max().clamp_min(1e-12))
    for _ in range(steps):
        w = project_to_simplex(w - step * 2 * (gram @ w - corr))
    return w.float()


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """The closest point to v [K] with non-negative entries summing to 1 (sort-based projection)."""
    u = v.sort(descending=True).values
    cumulative = u.cumsum(0) - 1
    ranks = torch.arange(1, len(v) + 1, dtype=v.dtype)
    rho = int((u - cumulative / ranks > 0).nonzero().max())
    return (v - cumulative[rho] / (rho + 1)).clamp_min(0)


def confident(probabilities: torch.Tensor, min_confidence: float | None) -> torch.Tensor:
    """Probabilities [B, K, H, W] with NaN wherever the top probability is below `min_confidence`
    (pseudo-labels: a KL target ignores NaN pixels); unchanged when it is None."""
    if min_confidence is None:
        return probabilities
    low = probabilities.amax(1, keepdim=True) < min_confidence
    return probabilities.masked_fill(low, float("nan"))


# ---------------------------------------------------------------------------------------- reading
def resolve_available(loaded: Loaded, stores: Sequence[VideoStore], targets: Sequence[str],
                      available: Sequence[str] | None) -> list[str]:
    """Input nodes an ensemble may show: those named by `available` (node or modality names; default
    every input node), minus the predicted ones, whose modality is in every store."""
    layout = loaded.layout
    inputs = [n for n in input_nodes(layout) if n not in targets]
    if available is not None:
        by_modality = {layout.node(n).modality: n for n in layout.names}
        unknown = [a for a in available if a not in layout.names and a not in by_modality]
        if unknown:
            raise VreError(f"--available {' '.join(unknown)}: not a node of {loaded.path} (its inputs: "
                           f"{', '.join(inputs)})")
        named = {a if a in layout.names else by_modality[a] for a in available}
        inputs = [n for n in inputs if n in named]
    return [n for n in inputs if all(layout.node(n).modality in s.names for s in stores)]


# ---------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Plan:
    """What one `vre ensemble` computes: the same for every store it writes."""

    nodes: tuple[str, ...]                  # predicted nodes
    available: tuple[str, ...]              # input nodes that may be visible
    masks: torch.Tensor                     # bool [K, M]
    aggregation: str
    seed: int
    pass_weights: Mapping[str, torch.Tensor]  # node -> float [K] (learned aggregation only)
    min_confidence: float | None = None
    labels: str | None = None               # keep these labels where a frame has them (pseudo-labels)

    @property
    def k(self) -> int:
        return int(self.masks.shape[0])

    def params(self, node: str, layout: NodeLayout) -> dict:
        """The provenance params of node's written modalities."""
        weights = self.pass_weights.get(node)
        return {"node": node, "k": self.k, "seed": self.seed, "aggregation": self.aggregation,
                "available": list(self.available), "masks": visible_nodes(self.masks, layout),
                "pass_weights": [round(float(v), 6) for v in weights] if weights is not None else None,
                "min_confidence": self.min_confidence, **({"labels": self.labels} if self.labels else {})}


def make_plan(loaded: Loaded, stores: Sequence[VideoStore], nodes: Sequence[str] | None, k: int,
              aggregation: str, seed: int, available: Sequence[str] | None = None,
              min_confidence: float | None = None, labels: str | None = None) -> Plan:
    """Targets, available inputs and masks (pass weights are fit by `fit_plan` for `learned`)."""
    layout = loaded.layout
    if aggregation not in AGGREGATIONS:
        raise VreError(f"--aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    nodes = list(nodes or layout.outputs)
    if not nodes:
        raise VreError(f"{loaded.path}: the checkpoint has no output node; name the node to predict "
                       f"with --node (one of {', '.join(layout.names)})")
    for n in nodes:
        if n not in layout.names:
            raise VreError(f"--node {n}: not a node of {loaded.path} (nodes: {', '.join(layout.names)})")
        if aggregation == "vote" and not is_class(layout, n):
            raise VreError(f"--aggregation vote needs a class node; '{n}' is a regression node")
    if min_confidence is not None and not 0 <= min_confidence <= 1:
        raise VreError(f"--min-confidence must be in [0, 1], got {min_confidence}")
    avail = resolve_available(loaded, stores, nodes, available)
    hidden = [n for n in layout.names if n not in avail]
    masks = ensemble_masks(ensemble_policy(layout, hidden, loaded.masking), k, seed)
    if labels is not None:
        if len(nodes) != 1 or not is_class(layout, nodes[0]):
            raise VreError(f"--labels keeps the labels of one class node; the ensemble predicts {', '.join(nodes)}")
        missing = [str(st.path) for st in stores if labels not in st.names]
        if missing:
            raise VreError(f"--labels {labels}: not in {', '.join(missing)}")
    return Plan(tuple(nodes), tuple(avail), masks, aggregation, seed, {}, min_confidence, labels)


def keep_labels(store: VideoStore, labels: str, positions: np.ndarray, probabilities: np.ndarray,
                uncertainty: np.ndarray) -> None:
    """Where a frame at `positions` [B] has `labels` (a class map, or class probabilities), put them
    in place of the ensemble's probabilities [B, H, W, K] (one-hot, NaN where unlabelled) and set the
    uncertainty [B, H, W, 1] to 0 there: pseudo-labels are appended to the labelled frames, never
    put in their place. In place."""
    done = store.done_frames(labels)[positions]
    if not done.any():
        return
    stored = store.read(labels, positions[done]).astype(np.float32)                     # [L, H, W, c]
    k = probabilities.shape[-1]
    if stored.shape[1:3] != probabilities.shape[1:3]:
        raise VreError(f"{store.path}/{labels}: {stored.shape[1:3]} frames, the ensemble writes {probabilities.shape[1:3]}")
    if stored.shape[-1] == 1:
        label = stored[..., 0]
        valid = (label >= 0) & (label < k)
        onehot = np.eye(k, dtype=np.float32)[np.where(valid, label, 0).astype(np.int64)]
        stored = np.where(valid[..., None], onehot, np.nan)
    elif stored.shape[-1] != k:
        raise VreError(f"{store.path}/{labels}: {stored.shape[-1]} channels, the node has {k} classes")
    probabilities[done] = stored.astype(probabilities.dtype)
    uncertainty[done] = 0


def fit_plan(plan: Plan, loaded: Loaded, store_paths: Sequence[Path], frames=None, batch_size: int = 4) -> Plan:
    """The plan with per-pass weights learned on `frames` (default: the checkpoint's validation
    frames) of the stores that hold each node's target modality (see `learn_weights`)."""
    if plan.aggregation != "learned":
        return plan
    if frames is None:
        frames = ((loaded.train.get("data") or {}).get("validation") or {}).get("frames")
    layout = loaded.layout
    weights = {}
    for node in plan.nodes:
        modality = layout.node(node).modality
        values, targets = [], []
        for path in store_paths:
            store = VideoStore.open(path)
            if modality not in store.names:
                continue
            positions = select_positions(store, frames)
            positions = positions[store.done_frames(modality)[positions]]
            batches = frame_batches(loaded, path, plan.available, positions, batch_size) if len(positions) else ()
            for pos, x, present, _ in batches:
                raw = run_passes(loaded.model, x, present, plan.masks, layout, [node])[node]
                v = to_values(raw, layout, node)                                        # [K, B, C, h, w]
                target = torch.from_numpy(store.read(modality, pos).astype(np.float32))  # [B, H, W, c]
                v = _resize(v.flatten(0, 1), target.shape[1:3]).unflatten(0, v.shape[:2])
                v = v[..., ::FIT_STRIDE, ::FIT_STRIDE].permute(0, 1, 3, 4, 2).flatten(1, 3)  # [K, P, C]
                n = layout.node(node)
                if is_class(layout, node):
                    t = target_labels(n, target[..., 0] if n.kind == "class" else target.permute(0, 3, 1, 2))
                    t = t[:, ::FIT_STRIDE, ::FIT_STRIDE].flatten()                            # [P]
                    keep = t < v.shape[2]
                else:
                    t = target[:, ::FIT_STRIDE, ::FIT_STRIDE].flatten(0, 2)                 # [P, C]
                    keep = torch.isfinite(t).all(1)
                values.append(v[:, keep].cpu())
                targets.append(t[keep])
        if not targets or sum(len(t) for t in targets) == 0:
            raise VreError(f"--aggregation learned: no validation frame with the target '{modality}' of "
                           f"node '{node}' in {', '.join(map(str, store_paths))} (frames {frames}); "
                           f"compute it, or use mean")
        weights[node] = learn_weights(torch.cat(values, 1), torch.cat(targets), is_class(layout, node))
    return dataclasses.replace(plan, pass_weights=weights)


def predict(plan: Plan, loaded: Loaded, x: torch.Tensor, present: torch.Tensor,
            size: tuple[int, int] | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """node -> (aggregated [B, C, H, W], uncertainty [B, 1, H, W]) for a batch, resized to `size`."""
    layout = loaded.layout
    raw = run_passes(loaded.model, x, present, plan.masks, layout, plan.nodes)
    out = {}
    for node in plan.nodes:
        classes = is_class(layout, node)
        how = "mean" if plan.aggregation == "learned" else plan.aggregation
        result, unc = aggregate(to_values(raw[node], layout, node), classes, how, plan.pass_weights.get(node))
        if size is not None and tuple(result.shape[-2:]) != tuple(size):
            result, unc = _resize(result, size), _resize(unc, size)
        if classes:
            result = confident(result, plan.min_confidence)
        out[node] = (result, unc)
    return out


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------- writing
def output_specs(plan: Plan, loaded: Loaded, node: str, store: VideoStore, name: str) -> tuple[ArraySpec, ArraySpec]:
    """The ArraySpecs (with provenance attrs) of a node's ensemble and its uncertainty."""
    layout = loaded.layout
    n = layout.node(node)
    deps = [layout.node(a).modality for a in plan.available]
    if is_class(layout, node):
        if not n.classes:
            raise VreError(f"{loaded.path}: node '{node}' has no class names in the checkpoint")
        palette = n.palette if len(n.palette) == len(n.classes) else ()
        out = OutputSpec(len(n.classes), "semantic", "float16", n.classes, palette, (0.0, 1.0))
        unc = OutputSpec(1, "features", "float16", value_range=(0.0, math.log(len(n.classes))))
    else:
        attrs = dict(store.array(n.modality).attrs) if n.modality in store.names else {}
        kind = attrs.get("kind", "features")
        kind = kind if kind in ("depth", "normals", "flow", "image") else "features"
        # a depth ensemble holds what the modality held (consumers read the quantity, never guess)
        out = OutputSpec(n.channels, kind, "float16", quantity=quantity_of(attrs) if kind == "depth" else None)
        unc = OutputSpec(1, "features", "float16")
    params = plan.params(node, layout)
    common = {"type": TYPE, "params": params, "deps": deps, "weights": loaded.provenance()}
    return (ArraySpec(name, out.channels, out.dtype, {**common, **out.to_attrs()}),
            ArraySpec(name + UNCERTAINTY_SUFFIX, unc.channels, unc.dtype,
                      {**common, **unc.to_attrs(), "uncertainty_of": name,
                       "measure": "entropy" if is_class(layout, node) else "variance"}))


def _prepare_array(store: VideoStore, spec: ArraySpec, size: tuple[int, int], overwrite: bool) -> None:
    """Create the array, or check that an existing one was written with the same provenance.

    An existing array written with other params or another checkpoint is refused, unless
    `overwrite`: then it is removed and written afresh."""
    if spec.name in store.names:
        attrs = dict(store.array(spec.name).attrs)
        same = (attrs.get("type") == TYPE and attrs.get("params") == json.loads(json.dumps(spec.attrs["params"]))
                and attrs.get("weights") == spec.attrs["weights"]
                and tuple(store.array(spec.name).shape[1:]) == (*size, spec.channels))
        if not same and not overwrite:
            raise StoreError(f"{store.path}/{spec.name}: exists and was not written by this ensemble (other "
                             f"checkpoint, params or shape); use --overwrite, or another --name")
        if not same:
            store.remove(spec.name)
    store.ensure_array(spec, *size)


class ShardWriter:
    """Collects per-frame outputs and writes each shard (data, then done flags) once every asked
    frame of that shard is in, so no shard is ever written twice or marked done early."""

    def __init__(self, store: VideoStore, names: Sequence[str], positions: np.ndarray):
        self.store, self.names = store, list(names)
        self.expected = {s: len(p) for s, p in shard_groups(np.asarray(positions), store.shard_frames).items()}
        self.pending: dict[int, dict[int, dict[str, np.ndarray]]] = {}

    def add(self, position: int, arrays: Mapping[str, np.ndarray]) -> None:
        """arrays: name -> [H, W, C] of the frame at `position`."""
        shard = position // self.store.shard_frames
        self.pending.setdefault(shard, {})[position] = dict(arrays)
        if len(self.pending[shard]) == self.expected[shard]:
            items = self.pending.pop(shard)
            idx = np.array(sorted(items), np.int64)
            for name in self.names:
                self.store.write_frames(name, idx, np.stack([items[p][name] for p in idx]))
            for name in self.names:
                self.store.mark_done(name, idx)


def ensemble_store(plan: Plan, loaded: Loaded, store_path: str | Path, names: Mapping[str, str],
                   frames=None, batch_size: int = 4, overwrite: bool = False) -> dict:
    """Compute the plan on one store and write it (resumable: frames already done with the same
    provenance are skipped unless `overwrite`). names: node -> written modality name.
    Returns {store, frames, seconds, frames_per_s, written: [names]}."""
    store = VideoStore.open(store_path, "r+")
    size = tuple(store.meta.get("resolution") or store.array(store.names[0]).shape[1:3])
    specs = [spec for node in plan.nodes for spec in output_specs(plan, loaded, node, store, names[node])]
    for spec in specs:
        _prepare_array(store, spec, size, overwrite)
    positions = select_positions(store, frames)
    if overwrite:
        for spec in specs:
            store.clear(spec.name, positions)
    done = np.logical_and.reduce([store.done_frames(s.name)[positions] for s in specs])
    todo = positions[~done]
    writer = ShardWriter(store, [s.name for s in specs], todo)
    t0 = time.perf_counter()
    batches = frame_batches(loaded, store.path, plan.available, todo, batch_size) if len(todo) else ()
    for pos, x, present, _ in batches:
        results = predict(plan, loaded, x, present, size)
        arrays = {}
        for node, (result, unc) in results.items():
            arrays[names[node]] = result.permute(0, 2, 3, 1).half().cpu().numpy()
            arrays[names[node] + UNCERTAINTY_SUFFIX] = unc.permute(0, 2, 3, 1).half().cpu().numpy()
            if plan.labels:
                keep_labels(store, plan.labels, pos, arrays[names[node]], arrays[names[node] + UNCERTAINTY_SUFFIX])
        for i, p in enumerate(pos):
            writer.add(int(p), {name: a[i] for name, a in arrays.items()})
    seconds = time.perf_counter() - t0
    return {"store": str(store.path), "frames": int(len(todo)), "skipped": int(done.sum()),
            "seconds": round(seconds, 3), "frames_per_s": round(len(todo) / seconds, 3) if len(todo) else None,
            "written": [s.name for s in specs]}


def output_names(plan: Plan, name: str | None) -> dict[str, str]:
    if name is not None and len(plan.nodes) > 1:
        raise VreError(f"--name names one modality but the ensemble predicts {len(plan.nodes)} nodes "
                       f"({', '.join(plan.nodes)}); pick one with --node")
    return {n: name or f"ensemble_{n}" for n in plan.nodes}


# ---------------------------------------------------------------------------------------- CLI
def main(args) -> int:
    """`vre ensemble CKPT STORE... [-k K] [--aggregation A] [--available NODE...] [--node NODE...]
    [--name NAME] [--min-confidence C] [--fit-frames ...] [--seed S] [--frames ...] [--batch-size B]
    [--device D] [--overwrite]`."""
    device = pick_device(args.device)
    loaded = load(args.checkpoint, device)
    paths = [Path(s) for s in args.store]
    stores = [VideoStore.open(p) for p in paths]
    plan = make_plan(loaded, stores, getattr(args, "node", None), args.k, args.aggregation, args.seed,
                     args.available, getattr(args, "min_confidence", None), getattr(args, "labels", None))
    if args.batch_size < 1:
        raise VreError(f"--batch-size must be at least 1, got {args.batch_size}")
    names = output_names(plan, args.name)
    plan = fit_plan(plan, loaded, paths, getattr(args, "fit_frames", None), args.batch_size)
    print(f"{loaded.path.name}: K={plan.k} passes ({plan.aggregation}) on {device}; available inputs: "
          f"{', '.join(plan.available) or 'none'}")
    for i, visible in enumerate(visible_nodes(plan.masks, loaded.layout)):
        weight = "".join(f"  weight[{n}] {float(w[i]):.3f}" for n, w in plan.pass_weights.items())
        print(f"  pass {i}: sees {', '.join(visible)}{weight}")
    for path in paths:
        s = ensemble_store(plan, loaded, path, names, args.frames, args.batch_size, args.overwrite)
        rate = f" ({s['frames_per_s']:.2f} frames/s)" if s["frames_per_s"] else ""
        print(f"{s['store']}: {', '.join(s['written'])}: {s['frames']} frames in {s['seconds']:.1f} s{rate}"
              + (f", {s['skipped']} already done" if s["skipped"] else ""))
    return 0
