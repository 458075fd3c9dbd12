"""`vre consistency STORE... --modality NAME --flow NAME [--delta D]`: how temporally consistent a
stored prediction is along a stored optical flow.

Each pixel p of frame t is followed through the flow to frame t + delta (p <- p + flow_t(p), then
the flow of t+1 sampled bilinearly where it landed, and so on, delta steps). A pixel is valid when it
stays inside the frame with a finite flow at every step and both frames have a value there. For
class modalities (class maps, class probabilities: their argmax, binary maps) the score is the share
of valid pixels whose label at t equals the label at t + delta where the pixel landed (nearest
pixel); for other modalities it is the mean absolute difference (bilinear sampling), averaged over
channels. Each pair (t, t + delta) counts once; occlusions are not detected, so a perfect prediction
of a scene with moving occluders scores below 1. Stored flow follows the `flow/farneback`
convention: float [T, H, W, 2] (dx, dy) in pixels from frame t to t + 1 (the last frame holds the
flow to t - 1, which forward chains never use).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from video_pipeline.errors import VreError
from video_pipeline.store import VideoStore

LABEL_KINDS = ("semantic", "binary")
NO_LABEL = 255


def follow(flows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each pixel of frame t lands after len(flows) steps.

    flows: the forward flows of frames t, t+1, ... each float [H, W, 2] (dx, dy) in pixels.
    Returns (x float32 [H, W], y float32 [H, W], valid bool [H, W]): valid pixels stayed inside the
    frame with a finite flow at every step.
    """
    h, w = flows[0].shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = xs.copy(), ys.copy()
    valid = np.ones((h, w), bool)
    for i, flow in enumerate(flows):
        flow = np.asarray(flow, np.float32)
        # the first step starts on the pixel grid; later ones sample the flow where pixels landed
        # (replicated border: a pixel landing exactly on the last row or column must not mix in
        # values from outside; pixels already outside are invalid whatever they sample)
        f = flow if i == 0 else cv2.remap(flow, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        x, y = x + f[..., 0], y + f[..., 1]
        valid &= np.isfinite(f).all(-1) & (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return x, y, valid


def to_labels(frame: np.ndarray, attrs: Mapping) -> np.ndarray:
    """A frame [H, W, C] of a class modality -> uint8 labels [H, W, c] (NO_LABEL where none):
    probabilities (semantic, several channels) give their argmax (one channel); class and binary
    maps stay as they are."""
    if attrs.get("kind") == "semantic" and frame.shape[-1] > 1:
        probs = frame.astype(np.float32)
        ok = np.isfinite(probs).all(-1) & (np.nan_to_num(probs).sum(-1) > 0)
        return np.where(ok, np.nan_to_num(probs).argmax(-1), NO_LABEL).astype(np.uint8)[..., None]
    return frame.astype(np.uint8)


def compare(a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, valid: np.ndarray,
            labels: bool) -> tuple[float, int]:
    """(sum, count) over the valid pixels of frame a [H, W, C] against frame b [H, W, C] sampled at
    (x, y): labels: the number of equal labels (nearest sampling, NO_LABEL ignored) and of compared
    pixels-channels; otherwise the sum of absolute differences (bilinear) and the count."""
    if labels:
        warped = cv2.remap(b, x, y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=NO_LABEL)
        warped = warped.reshape(a.shape)
        ok = valid[..., None] & (a != NO_LABEL) & (warped != NO_LABEL)
        return float((a == warped)[ok].sum()), int(ok.sum())
    warped = cv2.remap(b.astype(np.float32), x, y, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE).reshape(a.shape)
    diff = np.abs(a.astype(np.float32) - warped)
    ok = valid[..., None] & np.isfinite(diff)
    return float(diff[ok].sum()), int(ok.sum())


@dataclass
class Tally:
    """Running totals of one store (or all): pairs compared, pixels seen / valid, score sum."""

    pairs: int = 0
    pixels: int = 0
    valid: int = 0
    total: float = 0.0

    def add(self, other: "Tally") -> None:
        self.pairs += other.pairs
        self.pixels += other.pixels
        self.valid += other.valid
        self.total += other.total

    def summary(self, labels: bool) -> dict:
        score = self.total / self.valid if self.valid else None
        return {"pairs": self.pairs, "valid_share": self.valid / self.pixels if self.pixels else None,
                "agreement" if labels else "mean_abs_diff": score}


def store_consistency(store: VideoStore, modality: str, flow: str, delta: int = 1) -> tuple[Tally, bool]:
    """Consistency of one store: (its Tally, whether the modality is compared as labels)."""
    if delta < 1:
        raise VreError(f"--delta must be at least 1, got {delta}")
    arr, flow_arr = store.array(modality), store.array(flow)
    attrs = dict(arr.attrs)
    if flow_arr.shape[-1] != 2:
        raise VreError(f"{store.path}/{flow}: has {flow_arr.shape[-1]} channels; a flow has 2 (dx, dy)")
    if tuple(arr.shape[1:3]) != tuple(flow_arr.shape[1:3]):
        raise VreError(f"{store.path}: {modality} is {tuple(arr.shape[1:3])} but {flow} is "
                       f"{tuple(flow_arr.shape[1:3])}; both must have one resolution")
    labels = attrs.get("kind") in LABEL_KINDS
    done, flow_done = store.done_frames(modality), store.done_frames(flow)
    cache: dict[tuple[str, int], np.ndarray] = {}

    def frame(name: str, t: int) -> np.ndarray:
        if (name, t) not in cache:
            data = store.array(name)[t]
            cache[(name, t)] = to_labels(data, attrs) if name == modality and labels else data
        return cache[(name, t)]

    tally = Tally()
    for t in range(store.n_frames - delta):
        for key in [k for k in cache if k[1] < t]:
            del cache[key]
        if not (done[t] and done[t + delta] and flow_done[t:t + delta].all()):
            continue
        x, y, valid = follow([frame(flow, s) for s in range(t, t + delta)])
        a = frame(modality, t)
        total, count = compare(a, frame(modality, t + delta), x, y, valid, labels)
        tally.add(Tally(1, a.size, count, total))
    return tally, labels


def consistency(stores: Sequence[str | Path], modality: str, flow: str, delta: int = 1) -> dict:
    """{modality, flow, delta, measure, stores: {path: summary}, overall: summary} (see Tally)."""
    per_store, overall, labels = {}, Tally(), False
    for path in stores:
        tally, labels = store_consistency(VideoStore.open(path), modality, flow, delta)
        per_store[str(path)] = tally.summary(labels)
        overall.add(tally)
    return {"modality": modality, "flow": flow, "delta": delta,
            "measure": "agreement" if labels else "mean_abs_diff", "stores": per_store,
            "overall": overall.summary(labels)}


def format_report(report: dict) -> str:
    measure = report["measure"]
    lines = [f"{report['modality']} along {report['flow']}, frames t -> t+{report['delta']}: "
             f"{'share of valid pixels whose label agrees' if measure == 'agreement' else 'mean absolute difference'}",
             f"  {'store':<40}{'pairs':>7}{'valid':>9}{measure:>16}"]
    for name, s in [*report["stores"].items(), ("overall", report["overall"])]:
        valid = f"{s['valid_share']:.1%}" if s["valid_share"] is not None else "-"
        score = f"{s[measure]:.4f}" if s[measure] is not None else "-"
        lines.append(f"  {name:<40}{s['pairs']:>7}{valid:>9}{score:>16}")
    return "\n".join(lines)


def main(args) -> int:
    """`vre consistency STORE... --modality NAME --flow NAME [--delta D] [--json]`."""
    report = consistency(args.store, args.modality, args.flow, args.delta)
    if report["overall"]["pairs"] == 0:
        raise VreError(f"no frame pair (t, t+{args.delta}) has both '{args.modality}' and '{args.flow}' "
                       f"computed in {', '.join(args.store)}")
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0
