"""Inference with a PHG-MAE checkpoint, shared by `vre ensemble`, `vre analyze`, `vre evaluate`,
guided masking, distillation and the `semantic/phgmae-distil` expert.

- devices: `pick_device` ("auto" -> the best one present, through the project's one resolver
  `video_pipeline.device.resolve_device`), `amp_dtype_for`;
- checkpoints: `read_checkpoint` / `save_checkpoint` (one-line errors for a missing, empty or
  unreadable file; writes are atomic), `load` -> `Loaded` (model in eval mode, node layout, the
  training config and masking policy it records), `checkpoint_loss_specs`;
- masks: `ensemble_policy` (the training policy restricted to what a run may show),
  `ensemble_masks` (K fixed hyperedges, the first one full), `visible_nodes`;
- passes: `run_passes` (K masks x B frames in one forward), `is_class`, `to_values`
  (probabilities or raw units);
- frames: `select_positions` (CLI or config frame selections), `frame_batches` (a store's frames
  as the model's input, at the model's size).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from video_pipeline.errors import VreError
from video_pipeline.phgmae.engine import NodeLayout, dataset_statistics, forward_nodes, node_inputs, released_masking
from video_pipeline.phgmae.losses import DEFAULT_LOSS, LossSpec
from video_pipeline.phgmae.masking import MaskPolicy, sample_mask
from video_pipeline.store import VideoStore

DEFAULT_PROBABILITY = 0.5  # masking probability of checkpoints that do not record their policy


# ---------------------------------------------------------------------------------------- devices
def pick_device(name: str | None) -> torch.device:
    """A torch device from a config or CLI name (auto, cpu, mps, cuda, cuda:N); raises VreError when
    the named accelerator is not present."""
    from video_pipeline.device import resolve_device

    dev = torch.device(resolve_device(name))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VreError(f"device {name}: CUDA is not available here; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise VreError(f"device {name}: MPS is not available here; use --device cpu")
    return dev


def amp_dtype_for(dev: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA only: bfloat16 where supported (no loss scaling), else float16."""
    if dev.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ---------------------------------------------------------------------------------------- checkpoint
def read_checkpoint(path: Path) -> dict:
    """The checkpoint dict at `path`; VreError naming the file when it is missing, empty or unreadable."""
    from video_pipeline.weights import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise VreError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise VreError(f"checkpoint {path} is empty (0 bytes): an interrupted copy or download? copy it again")
    return load_checkpoint(path)


def save_checkpoint(ckpt: dict, path: Path) -> None:
    """Write via a temporary file and a rename: a crash never leaves a truncated checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Loaded:
    """A checkpoint ready for inference: the model (eval mode, on its device), its node layout, the
    training config it records ({} for checkpoints not made by `vre train`), its file facts, and
    the masking probabilities training learned (masking.learned), if it did."""

    model: torch.nn.Module
    layout: NodeLayout
    train: Mapping
    path: Path
    sha256: str
    device: torch.device
    learned_masking: Mapping[str, float] | None = None

    @property
    def masking(self) -> Mapping:
        """The training masking policy (a released checkpoint's drop_task_percent, included_tasks
        and excluded_tasks read as probability, always_visible, never_visible), with the learned
        probabilities in place of the initial ones."""
        masking = self.train.get("masking") or released_masking({"train": self.train}) or {}
        return {**masking, "probability": dict(self.learned_masking)} if self.learned_masking else masking

    def provenance(self) -> dict:
        return {"id": str(self.path), "sha256": self.sha256}


def load(path: str | Path, device: str | torch.device = "cpu") -> Loaded:
    """Read a PHG-MAE checkpoint (raises VreError naming the file)."""
    from video_pipeline.phgmae.model import model_from_checkpoint
    from video_pipeline.weights import file_sha256

    path = Path(path)
    ckpt = read_checkpoint(path)
    try:
        model, _ = model_from_checkpoint(ckpt)
        layout = NodeLayout.from_checkpoint(ckpt)
    except (ValueError, KeyError, TypeError) as err:
        raise VreError(f"checkpoint {path}: {err}") from None
    device = torch.device(device)
    train = ckpt["hyper_parameters"]["cfg"].get("train") or {}
    return Loaded(model.to(device).eval(), layout, train, path, file_sha256(path), device,
                  ckpt.get("learned_masking"))


def checkpoint_loss_specs(loaded: Loaded) -> dict[str, LossSpec]:
    """Each node's LossSpec as the checkpoint was trained (ce / kl / l2 by kind unless its config
    says otherwise)."""
    configured = (loaded.train.get("losses") or {}).get("nodes") or {}
    out = {}
    for node in loaded.layout.nodes:
        c = configured.get(node.name) or {}
        kind = c.get("type") or DEFAULT_LOSS[node.kind]
        weights = c.get("class_weights")
        out[node.name] = LossSpec(kind, float(c.get("weight", 1.0)), float(c.get("temperature", 1.0)),
                                  tuple(weights) if weights and kind == "ce" else None)
    return out


# ---------------------------------------------------------------------------------------- masks
def ensemble_policy(layout: NodeLayout, hidden: Sequence[str], masking: Mapping) -> MaskPolicy:
    """The training masking policy restricted to what an ensemble may show.

    Masked in every pass: `hidden` (predicted nodes, unavailable inputs), the checkpoint's outputs
    and its never_visible nodes. Visible in every pass: its always_visible nodes that are not hidden.
    The other nodes are masked with the training probability (or count, capped so one node stays
    visible); DEFAULT_PROBABILITY when the checkpoint does not record a policy.
    Raises VreError when no node could be visible.
    """
    nodes = tuple(layout.names)
    never_set = set(hidden) | set(layout.outputs) | set(masking.get("never_visible") or ())
    never = tuple(n for n in nodes if n in never_set)
    always = tuple(n for n in nodes if n in set(masking.get("always_visible") or ()) and n not in never_set)
    free = [n for n in nodes if n not in never_set and n not in always]
    if not always and not free:
        raise VreError(f"no input node is available to the ensemble (nodes {list(nodes)}, masked in every "
                       f"pass: {list(never)}); check --available and the store's modalities")
    count, probability = masking.get("count"), masking.get("probability")
    if count is not None:
        most = len(free) if always else len(free) - 1
        count, probability = (min(int(count[0]), most), min(int(count[1]), most)), None
    elif isinstance(probability, Mapping):
        probability = {n: float(probability.get(n, DEFAULT_PROBABILITY)) for n in free}
    elif probability is None:
        probability = DEFAULT_PROBABILITY
    return MaskPolicy(nodes, probability=probability, count=count, always_visible=always, never_visible=never)


def ensemble_masks(policy: MaskPolicy, k: int, seed: int) -> torch.Tensor:
    """bool [k, M] over `policy.nodes` (True = masked): row 0 the full hyperedge (only the
    never_visible nodes masked), rows 1..k-1 drawn by `sample_mask` from a generator seeded with
    `seed`. Every row masks every never_visible node and leaves at least one node visible."""
    if k < 1:
        raise VreError(f"-k must be at least 1, got {k}")
    full = torch.tensor([[n in policy.never_visible for n in policy.nodes]])
    rest = sample_mask(k - 1, policy, torch.Generator().manual_seed(seed))
    return torch.cat([full, rest])


def visible_nodes(masks: torch.Tensor, layout: NodeLayout) -> list[list[str]]:
    """The visible node names of each mask row (for provenance and logs)."""
    return [[n for n, hidden in zip(layout.names, row) if not hidden] for row in masks.tolist()]


# ---------------------------------------------------------------------------------------- passes
def run_passes(model: torch.nn.Module, x: torch.Tensor, present: torch.Tensor, masks: torch.Tensor,
               layout: NodeLayout, nodes: Sequence[str]) -> dict[str, torch.Tensor]:
    """Every mask on every frame in one forward: node -> raw output [K, B, C_n, H, W] (logits, or
    normalized values). x float32 [B, C, H, W]; present bool [B, M] (absent nodes are masked too);
    masks bool [K, M]."""
    k, b = masks.shape[0], x.shape[0]
    mask = (masks.to(x.device)[:, None, :] | ~present[None]).reshape(k * b, -1)            # [K*B, M]
    xs = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])                  # [K*B, C, H, W]
    with torch.inference_mode():
        out = forward_nodes(model, xs, mask, layout)
    return {n: out[n].float().reshape(k, b, *out[n].shape[1:]) for n in nodes}


def is_class(layout: NodeLayout, node: str) -> bool:
    return layout.node(node).kind in ("class", "soft")


def to_values(raw: torch.Tensor, layout: NodeLayout, node: str) -> torch.Tensor:
    """Raw outputs [..., C, H, W] -> class probabilities (softmax over C) or the node's raw units
    (the inverse of the dataset's normalization with the checkpoint's statistics)."""
    if is_class(layout, node):
        return raw.softmax(-3)
    stats = (layout.statistics or {}).get(node)
    if stats is None or layout.normalization == "none":
        return raw
    lo, hi, mean, std = (torch.tensor(s, dtype=raw.dtype, device=raw.device).view(-1, 1, 1) for s in stats)
    shift, span = (lo, hi - lo) if layout.normalization == "min_max" else (mean, std)
    return raw * torch.where(span > 0, span, torch.ones_like(span)) + shift


# ---------------------------------------------------------------------------------------- frames
def select_positions(store: VideoStore, frames) -> np.ndarray:
    """Sorted positions int64 [N] of a store's frames chosen by CLI tokens (["0..10", "12"]), a
    config value ("A..B" or "A..", end-exclusive, or a list of frame numbers) or None (every frame).
    Frame numbers are the store's own (its positions, except in imported sparse stores)."""
    from video_pipeline.phgmae.config import parse_frames as config_frames
    from video_pipeline.video import parse_frames

    numbers = store.frame_numbers()
    if frames is None:
        keep = np.ones(len(numbers), bool)
    elif isinstance(frames, str):
        r = config_frames(frames)
        keep = (numbers >= r.start) & (numbers < r.stop)
    elif all(isinstance(f, int) for f in frames):
        keep = np.isin(numbers, np.asarray(frames, np.int64))
    else:
        keep = np.isin(numbers, parse_frames(list(frames), 1, int(numbers.max()) + 1))
    return np.flatnonzero(keep).astype(np.int64)


def frame_batches(loaded: Loaded, store_path: Path, read: Sequence[str], positions: np.ndarray,
                  batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, dict]]:
    """Batches of a store's frames at `positions`, at the model's size, as the model's input.

    read: the nodes whose modalities are read (the others are absent: zero-filled and masked).
    Yields (positions int64 [B], x float32 [B, C, H, W] on the device, present bool [B, M] on the
    device, batch): `batch` maps every node's modality to its tensor as StoreDataset gives it
    (regression nodes normalized with the checkpoint's statistics, NaN / 255 where absent), the
    form `engine.node_targets` reads targets from, and "store" to the store name of each frame.
    """
    from video_pipeline.dataset import StoreDataset

    layout = loaded.layout
    store = VideoStore.open(store_path)
    numbers = store.frame_numbers()
    modalities = [layout.node(n).modality for n in read]
    normalization = {layout.node(n).modality: layout.normalization if layout.node(n).kind == "regression"
                     else "none" for n in read}
    statistics = dataset_statistics(layout, [n for n in read if layout.node(n).kind == "regression"])
    dataset = StoreDataset(store_path, modalities=modalities, frames=[int(v) for v in numbers[positions]],
                           resolution=layout.size, normalization=normalization, statistics=statistics,
                           missing="fill_nan")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    position_of = {int(n): i for i, n in enumerate(numbers)}
    for batch in loader:
        b = len(batch["frame"])
        h, w = dataset.size
        full = {"present": torch.zeros(b, len(layout.nodes), dtype=torch.bool), "store": batch["store"]}
        for m, node in enumerate(layout.nodes):
            if node.name in read:
                full[node.modality] = batch[node.modality]
                full["present"][:, m] = batch["present"][:, modalities.index(node.modality)]
            elif node.kind == "class":
                full[node.modality] = torch.full((b, h, w), 255, dtype=torch.int64)
            else:
                full[node.modality] = torch.full((b, node.channels, h, w), float("nan"))
        x, present = node_inputs(full, layout, loaded.device)
        pos = np.array([position_of[int(f)] for f in batch["frame"]], np.int64)
        yield pos, x, present, full


def input_nodes(layout: NodeLayout) -> list[str]:
    return [n for n in layout.names if n not in layout.outputs]
