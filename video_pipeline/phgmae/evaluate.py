"""`vre evaluate CKPT STORE...`: a checkpoint (a single pass, a mask ensemble, or a distilled
student) against a labelled modality, per class and per scene, with bootstrap confidence intervals,
printed as a table and written as JSON.

Scores are those of `metrics.ClassMetrics` (a scene is a store; a scene's mIoU is the mean over
classes of the IoUs of its pooled confusion matrix, the split's `miou_scenes` the mean of its
scenes' means, the Dronescapes convention; `miou` pools every pixel). Intervals come from the
frames: each bootstrap replicate draws, within every scene, as many frames as it has, with
replacement, and recomputes every figure from the drawn frames' confusion matrices (percentile
intervals; scenes are kept, frames resampled). `compare` bootstraps a difference between two
predictions of the same frames with the same draws (paired), which is how a claim "A beats B" is
tested: the interval of A - B excludes 0.

Pure functions work on per-frame confusion matrices int64 [F, K, K] (`frame_confusions`), so the
experiment in benchmarks/ and the CLI compute every figure the same way.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from video_pipeline.errors import VreError
from video_pipeline.phgmae.metrics import confusion_matrix

MARKER = "vre evaluate"   # the JSON files this command writes say so (it never overwrites others)


@dataclass(frozen=True)
class FrameScores:
    """Confusion matrices of F frames: confusions int64 [F, K, K] (entry [t, p]), the scene of each
    frame, its frame number, and the K class names."""

    confusions: np.ndarray
    scenes: tuple[str, ...]
    frames: tuple[int, ...]
    classes: tuple[str, ...]

    def __post_init__(self):
        f, k = len(self.scenes), len(self.classes)
        if self.confusions.shape != (f, k, k) or len(self.frames) != f:
            raise ValueError(f"confusions {self.confusions.shape}, {f} scenes, {len(self.frames)} frames and "
                             f"{k} classes do not agree")


def frame_confusions(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> np.ndarray:
    """pred, target int [B, H, W] (target 255 = unlabelled) -> int64 [B, K, K], one per frame."""
    return np.stack([confusion_matrix(p, t, num_classes) for p, t in zip(pred, target)])


def _ious(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU of confusion matrices [..., K, K] -> [..., K] (NaN where a class is in neither)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    support = cm.sum(-1) + cm.sum(-2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, tp / np.where(support > 0, support, 1), np.nan)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean over `axis` ignoring NaN (NaN where every value is NaN), without warnings."""
    ok = ~np.isnan(x)
    n = ok.sum(axis)
    return np.where(n > 0, np.where(ok, x, 0).sum(axis) / np.maximum(n, 1), np.nan)


def statistics(scene_confusions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The figures of per-scene pooled confusion matrices {scene: [..., K, K]} (any leading shape R):
    iou [R, K] (pooled), miou [R], scene_miou {scene: [R]}, miou_scenes [R]."""
    pooled = sum(scene_confusions.values())
    iou = _ious(pooled)
    scene = {s: _nanmean(_ious(cm), -1) for s, cm in scene_confusions.items()}
    return {"iou": iou, "miou": _nanmean(iou, -1), "scene_miou": scene,
            "miou_scenes": _nanmean(np.stack(list(scene.values())), 0)}


def _draws(scores: FrameScores, n: int, seed: int) -> dict[str, np.ndarray]:
    """{scene: int64 [n, F_s] counts}: how often each of the scene's frames is drawn per replicate."""
    rng = np.random.default_rng(seed)
    out = {}
    for scene in dict.fromkeys(scores.scenes):
        f = sum(1 for s in scores.scenes if s == scene)
        out[scene] = rng.multinomial(f, np.full(f, 1.0 / f), size=n)
    return out


def _replicates(scores: FrameScores, draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    scenes = np.asarray(scores.scenes)
    per_scene = {}
    for scene, counts in draws.items():
        cms = scores.confusions[scenes == scene].reshape(counts.shape[1], -1)         # [F_s, K*K]
        k = len(scores.classes)
        per_scene[scene] = (counts @ cms).reshape(-1, k, k)                           # [n, K, K]
    return statistics(per_scene)


def _interval(values: np.ndarray, level: float) -> list[float | None]:
    v = values[~np.isnan(values)]
    if not len(v):
        return [None, None]
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def _value(v) -> float | None:
    return None if v is None or np.isnan(v) else float(v)


def summarize(scores: FrameScores, bootstrap: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Every figure with its interval: {miou, miou_scenes: {value, ci}, iou: {class: {value, ci}},
    scene_miou: {scene: {value, ci}}, frames, scenes, bootstrap, level}."""
    scenes = np.asarray(scores.scenes)
    point = statistics({s: scores.confusions[scenes == s].sum(0) for s in dict.fromkeys(scores.scenes)})
    reps = _replicates(scores, _draws(scores, bootstrap, seed))

    def fig(value, samples):
        return {"value": _value(value), "ci": _interval(samples, level)}

    return {"miou_scenes": fig(point["miou_scenes"], reps["miou_scenes"]),
            "miou": fig(point["miou"], reps["miou"]),
            "iou": {c: fig(point["iou"][i], reps["iou"][:, i]) for i, c in enumerate(scores.classes)},
            "scene_miou": {s: fig(point["scene_miou"][s], reps["scene_miou"][s]) for s in point["scene_miou"]},
            "frames": len(scores.scenes), "scenes": list(dict.fromkeys(scores.scenes)),
            "bootstrap": bootstrap, "level": level}


def compare(a: FrameScores, b: FrameScores, bootstrap: int = 1000, level: float = 0.95, seed: int = 0,
            figure: str = "miou_scenes") -> dict:
    """a - b on the same frames, paired: {value, ci, p_not_better} where p_not_better is the share
    of replicates in which a does not beat b (a one-sided bootstrap p-value for "a > b")."""
    if a.scenes != b.scenes or a.frames != b.frames:
        raise ValueError("compare needs the scores of the same frames in the same order")
    draws = _draws(a, bootstrap, seed)
    ra, rb = _replicates(a, draws), _replicates(b, draws)
    pa = summarize(a, 1, level, seed)[figure]["value"]
    pb = summarize(b, 1, level, seed)[figure]["value"]
    diff = ra[figure] - rb[figure]
    return {"value": None if pa is None or pb is None else pa - pb, "ci": _interval(diff, level),
            "p_not_better": float(np.mean(diff[~np.isnan(diff)] <= 0)) if np.isfinite(diff).any() else None}


def table(summary: Mapping, title: str = "") -> str:
    """A plain-text table: the split figures, each class, each scene; values and intervals in %."""
    def pct(f) -> str:
        v, (lo, hi) = f["value"], f["ci"]
        if v is None:
            return "-"
        return f"{100 * v:6.2f}  [{100 * lo:6.2f}, {100 * hi:6.2f}]" if lo is not None else f"{100 * v:6.2f}"

    level = round(100 * summary["level"])
    lines = [title] if title else []
    lines.append(f"{'':24}{'value':>6}  {level}% interval ({summary['bootstrap']} bootstrap draws of "
                 f"{summary['frames']} frames)")
    lines.append(f"{'mIoU (mean of scenes)':24}{pct(summary['miou_scenes'])}")
    lines.append(f"{'mIoU (pooled pixels)':24}{pct(summary['miou'])}")
    for c, f in summary["iou"].items():
        lines.append(f"{'  IoU ' + c:24}{pct(f)}")
    for s, f in summary["scene_miou"].items():
        lines.append(f"{'  scene ' + s:24}{pct(f)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- checkpoints
def scores_of(predictions: Iterable[tuple[str, np.ndarray, torch.Tensor, torch.Tensor]],
              classes: Sequence[str]) -> FrameScores:
    """FrameScores from batches (scene, frame numbers [B], predicted labels int [B, H, W], target
    labels int [B, H, W])."""
    cms, scenes, frames = [], [], []
    for scene, numbers, pred, target in predictions:
        cms.append(frame_confusions(pred, target, len(classes)))
        scenes += [scene] * len(numbers)
        frames += [int(f) for f in numbers]
    if not cms:
        raise VreError("no frame to evaluate (check the stores, --frames and the target modality)")
    return FrameScores(np.concatenate(cms), tuple(scenes), tuple(frames), tuple(classes))


def checkpoint_scores(loaded, store_paths: Sequence[Path], node: str | None, target: str | None, k: int,
                      aggregation: str, seed: int, available: Sequence[str] | None, frames,
                      batch_size: int) -> tuple[FrameScores, dict]:
    """Score a checkpoint's class node (default: its first class output) against `target` (a class
    map or probabilities modality; default: the node's own modality) on every store's `frames` that
    hold the target. Returns the scores and a description of what ran."""
    from video_pipeline.phgmae.engine import Node, target_labels
    from video_pipeline.phgmae.ensemble import make_plan, predict
    from video_pipeline.phgmae.inference import frame_batches, is_class, select_positions
    from video_pipeline.store import VideoStore

    layout = loaded.layout
    classes_nodes = [n for n in (layout.outputs or layout.names) if is_class(layout, n)]
    node = node or (classes_nodes[0] if classes_nodes else None)
    if node is None or node not in layout.names or not is_class(layout, node):
        raise VreError(f"{loaded.path}: evaluate scores a class node; name one with --node (class nodes: "
                       f"{', '.join(n for n in layout.names if is_class(layout, n)) or 'none'})")
    target = target or layout.node(node).modality
    stores = [VideoStore.open(p) for p in store_paths]
    for s in stores:
        if target not in s.names:
            raise VreError(f"{s.path}: has no '{target}' to score against; name the labelled modality with --target")
    plan = make_plan(loaded, stores, [node], k, aggregation, seed, available)
    classes = layout.node(node).classes

    def batches():
        for store in stores:
            positions = select_positions(store, frames)
            positions = positions[store.done_frames(target)[positions]]
            size = tuple(store.array(target).shape[1:3])
            numbers = store.frame_numbers()
            channels = store.array(target).shape[-1]
            if channels not in (1, len(classes)):
                raise VreError(f"{store.path}/{target}: {channels} channels; a class map (1) or "
                               f"{len(classes)} class probabilities expected")
            for pos, x, present, _ in frame_batches(loaded, store.path, plan.available, positions, batch_size) \
                    if len(positions) else ():
                probs, _ = predict(plan, loaded, x, present, size)[node]
                stored = torch.from_numpy(store.read(target, pos).astype(np.float32))       # [B, H, W, c]
                truth = (stored[..., 0].nan_to_num(255).long() if channels == 1 else
                         target_labels(Node(target, "soft", channels, target), stored.permute(0, 3, 1, 2)))
                yield store.path.stem, numbers[pos], probs.argmax(1).cpu(), truth

    scores = scores_of(batches(), classes)
    return scores, {"checkpoint": str(loaded.path), "sha256": loaded.sha256, "node": node, "target": target,
                    "k": plan.k, "aggregation": aggregation, "seed": seed, "available": list(plan.available)}


def write_json(path: Path, data: dict) -> None:
    """Write `data` to path, refusing to replace a file this command did not write."""
    path = Path(path)
    if path.exists():
        try:
            ours = json.loads(path.read_text()).get("written_by") == MARKER
        except (ValueError, AttributeError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise VreError(f"{path}: exists and was not written by vre evaluate; choose another --json")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"written_by": MARKER, **data}, indent=1) + "\n")
    tmp.replace(path)


def main(args) -> int:
    """`vre evaluate CKPT STORE... [--target MODALITY] [--node NODE] [-k K] [--aggregation A]
    [--available NODE...] [--frames ...] [--bootstrap N] [--level L] [--seed S] [--json FILE]
    [--batch-size B] [--device D]`."""
    from video_pipeline.phgmae.inference import load, pick_device

    if args.bootstrap < 1 or not 0 < args.level < 1:
        raise VreError("--bootstrap must be >= 1 and --level in (0, 1)")
    loaded = load(args.checkpoint, pick_device(args.device))
    scores, what = checkpoint_scores(loaded, [Path(s) for s in args.store], args.node, args.target, args.k,
                                     args.aggregation, args.seed, args.available, args.frames, args.batch_size)
    summary = summarize(scores, args.bootstrap, args.level, args.seed)
    print(table(summary, f"{loaded.path.name}: node {what['node']} against '{what['target']}', K={what['k']} "
                         f"({what['aggregation']}), inputs {', '.join(what['available']) or 'none'}"))
    if args.json:
        write_json(Path(args.json), {**what, **summary, "frame_numbers": list(scores.frames),
                                     "frame_scenes": list(scores.scenes)})
        print(f"wrote {args.json}")
    return 0
