"""`vre analyze`: what a PHG-MAE checkpoint learned about its modalities, and how two stored
modalities agree.

- importance: for every target node n (a node the checkpoint's masking may hide) and every input
  node m the training policy may both show and hide (always-visible nodes such as rgb are left out:
  a mask hiding them was never seen in training), n's loss with m masked minus its loss with m
  visible, over random masks of the training policy: each base mask is evaluated twice, m forced
  visible and m forced masked (paired, so the other nodes' luck cancels), at every base mask where
  n is masked; a pair whose masked side would hide every node is left out (training never draws
  such a mask). Positive: seeing m helps predict n. Written as importance.csv and a heatmap
  importance.png. (MR-MAE's matrix of each input alone is `loss_matrix`.)
- robustness: each output node's metric (mIoU for class nodes, mean absolute error in the node's
  units for regression) when c of the maskable inputs are missing, c = 0 .. all of them, averaged
  over subsets of that size (all of them, or `subsets` random ones); optionally also for an ensemble
  of K passes over what remains. Written as robustness.csv and robustness.png.
- agreement: mIoU and pixel agreement (class modalities) or mean absolute difference of a stored
  prediction against a stored target, per store and pooled.
Frames default to the checkpoint's validation frames (data.validation.frames of its config).
"""
from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from video_pipeline.errors import VreError
from video_pipeline.phgmae.engine import node_targets, target_labels
from video_pipeline.phgmae.ensemble import Plan, predict
from video_pipeline.phgmae.inference import (Loaded, checkpoint_loss_specs, ensemble_masks, ensemble_policy,
                                             frame_batches, is_class, load, pick_device, run_passes,
                                             select_positions, to_values)
from video_pipeline.phgmae.losses import node_loss
from video_pipeline.phgmae.masking import paired_masks, sample_mask
from video_pipeline.phgmae.metrics import ClassMetrics, iou_f1
from video_pipeline.store import VideoStore

CHUNK = 8  # mask variants per forward (times the batch size): bounds memory at large frames


# ---------------------------------------------------------------------------------------- setup
def default_frames(loaded: Loaded, frames):
    """`frames` as given, else the checkpoint's validation frames (None: every frame)."""
    if frames is not None:
        return frames
    return ((loaded.train.get("data") or {}).get("validation") or {}).get("frames")


def stored_nodes(loaded: Loaded, stores: Sequence[VideoStore]) -> list[str]:
    """Nodes whose modality every store holds."""
    return [n.name for n in loaded.layout.nodes if all(n.modality in s.names for s in stores)]


def _batches(loaded: Loaded, paths: Sequence[Path], read: Sequence[str], frames, batch_size: int):
    for path in paths:
        store = VideoStore.open(path)
        positions = select_positions(store, frames)
        if len(positions):
            yield from frame_batches(loaded, path, read, positions, batch_size)


# ---------------------------------------------------------------------------------------- importance
def _measured_nodes(loaded: Loaded, paths: Sequence[Path], need: str):
    """(have, policy, inputs, targets) of an analysis over the stores `paths`: the nodes they all
    hold, the checkpoint's masking policy restricted to those, the inputs it may show and hide, the
    targets it hides. VreError `{checkpoint}: {need}, among those in the stores (...)` when either
    list is empty."""
    layout = loaded.layout
    have = stored_nodes(loaded, [VideoStore.open(p) for p in paths])
    policy = ensemble_policy(layout, [n for n in layout.names if n not in have], loaded.masking)
    inputs = [n for n in have if n in policy.free]
    targets = [n for n in have if n not in policy.always_visible]
    if not inputs or not targets:
        raise VreError(f"{loaded.path}: {need}, among those in the stores ({', '.join(have)}; always visible: "
                       f"{', '.join(policy.always_visible) or 'none'})")
    return have, policy, inputs, targets


def importance(loaded: Loaded, paths: Sequence[Path], frames=None, masks: int = 16, seed: int = 0,
               batch_size: int = 2) -> dict:
    """The modality-importance matrix (see the module docstring).

    Returns {targets: [n], inputs: [m], loss_visible, loss_masked, importance: [[float | None]]
    (targets x inputs; None where m is n or never measured), samples: [[int]] (frame-mask pairs
    behind each cell), masks, frames}.
    """
    layout = loaded.layout
    have, policy, inputs, targets = _measured_nodes(
        loaded, paths, "importance needs a node the training masking both shows and hides, and one it hides")
    col = {n: i for i, n in enumerate(layout.names)}
    base = sample_mask(masks, policy, torch.Generator().manual_seed(seed))               # [R, M]
    unique, index = paired_masks(base, [col[m] for m in inputs])                     # [U, M], [R, F, 2]
    blind = unique[index[:, :, 1]].all(-1).numpy()                                   # [R, F]
    specs = checkpoint_loss_specs(loaded)
    num = np.zeros((len(targets), len(inputs), 2))
    den = np.zeros((len(targets), len(inputs), 2))
    count = np.zeros((len(targets), len(inputs)), np.int64)
    frames = default_frames(loaded, frames)
    for _, x, present, batch in _batches(loaded, paths, have, frames, batch_size):
        truth = node_targets(batch, layout, x.device)
        losses = {}  # (unique mask, target) -> (loss x weight, weight), where the mask hides the target
        for start in range(0, len(unique), CHUNK):
            raw = run_passes(loaded.model, x, present, unique[start:start + CHUNK], layout, targets)
            for j in range(raw[targets[0]].shape[0]):
                for t, n in enumerate(targets):
                    if unique[start + j, col[n]]:
                        value, weight = node_loss(specs[n], raw[n][j], truth[n], present[:, col[n]])
                        losses[(start + j, t)] = (float(value) * float(weight), float(weight))
        for (r, f, hidden), u in np.ndenumerate(index.numpy()):
            if blind[r, f]:
                continue  # its masked variant hides every node: never drawn in training
            for t, n in enumerate(targets):
                if n == inputs[f] or not base[r, col[n]]:
                    continue  # n must be hidden in both variants for its loss to count
                total, weight = losses[(int(u), t)]
                num[t, f, hidden] += total
                den[t, f, hidden] += weight
                count[t, f] += int(present[:, col[n]].sum()) if hidden else 0
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)
    delta = loss[..., 1] - loss[..., 0]

    def listed(a):
        return [[None if not np.isfinite(v) else float(v) for v in row] for row in a]

    return {"targets": targets, "inputs": inputs, "loss_visible": listed(loss[..., 0]),
            "loss_masked": listed(loss[..., 1]), "importance": listed(delta), "samples": count.tolist(),
            "masks": masks, "frames": frames}


def loss_matrix(loaded: Loaded, paths: Sequence[Path], frames=None, batch_size: int = 2) -> dict:
    """MR-MAE's loss matrix: the loss of every target node n when one input m alone is visible
    (besides the always-visible nodes), and when none is (the always-visible nodes alone, a column
    only when there are any). Low: m alone predicts n well.

    Returns {targets, columns: [m ... (, "always-visible only")], loss: [[float | None]] (targets x
    columns; None where n is m or nothing counted), frames}.
    """
    layout = loaded.layout
    have, policy, inputs, targets = _measured_nodes(
        loaded, paths, "the loss matrix needs inputs the training masking may show and hide, and targets it hides")
    col = {n: i for i, n in enumerate(layout.names)}
    columns = [*inputs, *(["always-visible only"] if policy.always_visible else [])]
    masks = torch.ones(len(columns), len(layout.names), dtype=torch.bool)            # [U, M]
    for n in policy.always_visible:
        masks[:, col[n]] = False
    for i, m in enumerate(inputs):
        masks[i, col[m]] = False
    specs = checkpoint_loss_specs(loaded)
    num = np.zeros((len(targets), len(columns)))
    den = np.zeros((len(targets), len(columns)))
    frames = default_frames(loaded, frames)
    for _, x, present, batch in _batches(loaded, paths, have, frames, batch_size):
        truth = node_targets(batch, layout, x.device)
        for start in range(0, len(columns), CHUNK):
            raw = run_passes(loaded.model, x, present, masks[start:start + CHUNK], layout, targets)
            for j in range(raw[targets[0]].shape[0]):
                for t, n in enumerate(targets):
                    if start + j < len(inputs) and inputs[start + j] == n:
                        continue
                    value, weight = node_loss(specs[n], raw[n][j], truth[n], present[:, col[n]])
                    num[t, start + j] += float(value) * float(weight)
                    den[t, start + j] += float(weight)
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)
    return {"targets": targets, "columns": columns,
            "loss": [[None if not np.isfinite(v) else float(v) for v in row] for row in loss], "frames": frames}


def importance_map(loaded: Loaded, paths: Sequence[Path], target: str, frames=None, masks: int = 16,
                   seed: int = 0, batch_size: int = 2) -> dict:
    """Where each input helps one target: per pixel, the target's loss with the input masked minus
    visible (paired over base masks of the training policy that hide the target, as `importance`),
    averaged over frames and masks. Returns {target, inputs, maps: float32 [F, H, W] (one per
    input, at the model's size; NaN where nothing counted), frames}."""
    from video_pipeline.phgmae.losses import pixel_loss

    layout = loaded.layout
    stores = [VideoStore.open(p) for p in paths]
    have = stored_nodes(loaded, stores)
    policy = ensemble_policy(layout, [n for n in layout.names if n not in have], loaded.masking)
    inputs = [n for n in have if n in policy.free and n != target]
    if target not in have or target in policy.always_visible or not inputs:
        raise VreError(f"{loaded.path}: a map needs a target the training masking hides ('{target}': nodes "
                       f"{', '.join(have)}) and an input it may show and hide")
    col = {n: i for i, n in enumerate(layout.names)}
    base = sample_mask(masks, policy, torch.Generator().manual_seed(seed))
    base = base[base[:, col[target]]]                                                # the target hidden
    unique, index = paired_masks(base, [col[m] for m in inputs])
    blind = unique[index[:, :, 1]].all(-1)                                           # [R, F]
    spec = checkpoint_loss_specs(loaded)[target]
    num = den = None
    frames = default_frames(loaded, frames)
    for _, x, present, batch in _batches(loaded, paths, have, frames, batch_size):
        truth = node_targets(batch, layout, x.device)[target]
        per_mask = []
        for start in range(0, len(unique), CHUNK):
            raw = run_passes(loaded.model, x, present, unique[start:start + CHUNK], layout, [target])[target]
            per_mask += [pixel_loss(spec, raw[j], truth) for j in range(raw.shape[0])]    # ([B, H, W], [B, H, W])
        if num is None:
            num = torch.zeros(len(inputs), *truth.shape[-2:], dtype=torch.float64)
            den = torch.zeros_like(num)
        keep = present[:, col[target]].float().view(-1, 1, 1)
        for r in range(len(base)):
            for f in range(len(inputs)):
                if blind[r, f]:
                    continue
                (lv, wv), (lh, wh) = per_mask[int(index[r, f, 0])], per_mask[int(index[r, f, 1])]
                w = wv * wh * keep
                num[f] += ((lh - lv) * w).sum(0).double().cpu()
                den[f] += w.sum(0).double().cpu()
    if num is None:
        raise VreError(f"no frame to analyse in {', '.join(map(str, paths))} (frames {frames})")
    maps = torch.where(den > 0, num / den.clamp_min(1e-12), torch.full_like(num, float("nan"))).float().numpy()
    return {"target": target, "inputs": inputs, "maps": maps, "frames": frames}


def write_importance_map(result: Mapping, out: Path) -> list[Path]:
    """importance_map_<target>.npz (the maps) and one PNG per input: red where masking the input
    raises the target's loss, blue where it lowers it, white 0 (scaled to the largest magnitude)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    npz = out / f"importance_map_{result['target']}.npz"
    np.savez_compressed(npz, **{m: result["maps"][i] for i, m in enumerate(result["inputs"])})
    files = [npz]
    scale = float(np.nanmax(np.abs(result["maps"]))) if np.isfinite(result["maps"]).any() else 1.0
    for i, m in enumerate(result["inputs"]):
        v = np.nan_to_num(result["maps"][i] / max(scale, 1e-12))                     # [-1, 1]
        rgb = np.stack([1 - np.clip(-v, 0, 1), 1 - np.abs(v), 1 - np.clip(v, 0, 1)], -1)
        path = out / f"importance_map_{result['target']}_{m}.png"
        Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
        files.append(path)
    return files


def write_importance(result: Mapping, out: Path) -> tuple[Path, Path]:
    """importance.csv (one row per target and input) and importance.png."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "importance.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", "input", "loss_visible", "loss_masked", "importance", "relative", "samples"])
        for t, n in enumerate(result["targets"]):
            for i, m in enumerate(result["inputs"]):
                vis, hid, imp = (result[k][t][i] for k in ("loss_visible", "loss_masked", "importance"))
                rel = imp / vis if imp is not None and vis else None
                w.writerow([n, m, _fmt(vis), _fmt(hid), _fmt(imp), _fmt(rel), result["samples"][t][i]])
    png = draw_heatmap(out / "importance.png", result["importance"], result["targets"], result["inputs"],
                       "modality importance: target loss with the input masked minus visible")
    return path, png


def _fmt(v) -> str:
    return "" if v is None else f"{v:.6g}"


def draw_heatmap(path: Path, values: Sequence[Sequence[float | None]], rows: Sequence[str],
                 cols: Sequence[str], title: str) -> Path:
    """A table of coloured cells with their values: red where positive, blue where negative, each
    row scaled to its largest magnitude (rows are different losses); grey where None."""
    from PIL import Image, ImageDraw, ImageFont

    font, title_font = ImageFont.load_default(size=13), ImageFont.load_default(size=15)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = int(max(probe.textlength(r, font=font) for r in rows)) + 20
    cell_w = max(90, int(max(probe.textlength(c, font=font) for c in cols)) + 16)
    cell_h, top = 40, 64
    notes = ("red: masking the input raises the target's loss (the input helps); blue: it lowers it",
             "colours are scaled per row (each target has its own loss); grey: not measured")
    width = max(left + cell_w * len(cols) + 16, int(probe.textlength(title, font=title_font)) + 24,
                *(int(probe.textlength(n, font=font)) + 24 for n in notes))
    img = Image.new("RGB", (width, top + cell_h * len(rows) + 56), "white")
    draw = ImageDraw.Draw(img)
    draw.text((width // 2, 10), title, fill="black", font=title_font, anchor="mt")
    for j, c in enumerate(cols):
        draw.text((left + cell_w * j + cell_w // 2, top - 8), c, fill="black", font=font, anchor="mb")
    for i, (r, row) in enumerate(zip(rows, values)):
        y = top + cell_h * i
        draw.text((left - 10, y + cell_h // 2), r, fill="black", font=font, anchor="rm")
        scale = max([abs(v) for v in row if v is not None] or [1.0]) or 1.0
        for j, v in enumerate(row):
            x = left + cell_w * j
            if v is None:
                colour, text = (225, 225, 225), "-"
            else:
                s = min(abs(v) / scale, 1.0)
                hue = (214, 39, 40) if v > 0 else (31, 119, 180)
                colour = tuple(int(255 + (h - 255) * s) for h in hue)
                text = f"{v:.3g}"
            draw.rectangle([x, y, x + cell_w - 2, y + cell_h - 2], fill=colour)
            ink = "white" if v is not None and abs(v) / scale > 0.6 else "black"
            draw.text((x + cell_w // 2, y + cell_h // 2), text, fill=ink, font=font, anchor="mm")
    for i, note in enumerate(notes):
        draw.text((12, top + cell_h * len(rows) + 10 + 18 * i), note, fill=(90, 90, 90), font=font)
    img.save(path)
    return path


# ---------------------------------------------------------------------------------------- robustness
def _subsets(free: Sequence[str], size: int, limit: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    every = list(itertools.combinations(free, size))
    if len(every) <= limit:
        return every
    return [every[i] for i in sorted(rng.choice(len(every), limit, replace=False))]


def robustness(loaded: Loaded, paths: Sequence[Path], frames=None, subsets: int = 8, ensemble_k: int = 0,
               seed: int = 0, batch_size: int = 2) -> dict:
    """Each output node's metric as more inputs go missing (see the module docstring).

    Returns {free: [maskable inputs], rows: [{masked: c, subset: [names], node, metric, single,
    ensemble}], levels: {node: {"single" | "ensemble": [(c, mean over subsets)]}}}.
    """
    layout = loaded.layout
    stores = [VideoStore.open(p) for p in paths]
    have = stored_nodes(loaded, stores)
    outputs = [n for n in layout.outputs if n in have]
    if not outputs:
        raise VreError(f"{loaded.path}: robustness needs an output node whose target is in the stores "
                       f"(outputs: {', '.join(layout.outputs) or 'none'})")
    absent = [n for n in layout.names if n not in have]
    policy = ensemble_policy(layout, absent, loaded.masking)
    free = list(policy.free)
    rng = np.random.default_rng(seed)
    cases = [s for c in range(len(free) + 1) for s in _subsets(free, c, subsets, rng)]
    singles = torch.tensor([[n in policy.never_visible or n in s for n in layout.names] for s in cases])
    plans = []  # the ensemble of each case; None where nothing is left to see
    for s in cases if ensemble_k else []:
        hidden = absent + list(s)
        available = tuple(n for n in layout.names if n not in hidden and n not in layout.outputs
                          and n not in policy.never_visible)
        masks = ensemble_masks(ensemble_policy(layout, hidden, loaded.masking), ensemble_k, seed) if available else None
        plans.append(Plan(tuple(outputs), available, masks, "mean", seed, {}) if available else None)
    kinds = ["single"] + (["ensemble"] if ensemble_k else [])
    scores = {(kind, i, n): (ClassMetrics(layout.node(n).classes) if is_class(layout, n) else [0.0, 0])
              for kind in kinds for i in range(len(cases)) for n in outputs}

    def add(kind: str, i: int, node: str, values: torch.Tensor, truth: torch.Tensor, scenes) -> None:
        """values: probabilities or raw-unit values [B, C, H, W] of one case."""
        if is_class(layout, node):
            labels = target_labels(layout.node(node), truth).cpu()
            scores[(kind, i, node)].update(scenes, values.argmax(1).cpu(), labels)
        else:
            diff = (values - to_values(truth, layout, node)).abs()
            ok = torch.isfinite(diff)
            scores[(kind, i, node)][0] += float(diff[ok].sum())
            scores[(kind, i, node)][1] += int(ok.sum())

    for _, x, present, batch in _batches(loaded, paths, have, default_frames(loaded, frames), batch_size):
        truth = node_targets(batch, layout, x.device)
        for start in range(0, len(cases), CHUNK):
            raw = run_passes(loaded.model, x, present, singles[start:start + CHUNK], layout, outputs)
            for j in range(raw[outputs[0]].shape[0]):
                for n in outputs:
                    add("single", start + j, n, to_values(raw[n][j], layout, n), truth[n], batch["store"])
        for i, plan in enumerate(plans):
            for n, (result, _) in (predict(plan, loaded, x, present).items() if plan else ()):
                add("ensemble", i, n, result, truth[n], batch["store"])
    rows, levels = [], {n: {k: {} for k in kinds} for n in outputs}
    for i, s in enumerate(cases):
        for n in outputs:
            row = {"masked": len(s), "subset": list(s), "node": n,
                   "metric": "miou" if is_class(layout, n) else "mean_abs_error"}
            for kind in kinds:
                sc = scores[(kind, i, n)]
                value = sc.summary()["miou"] if is_class(layout, n) else (sc[0] / sc[1] if sc[1] else None)
                row[kind] = value
                if value is not None:
                    levels[n][kind].setdefault(len(s), []).append(value)
            rows.append(row)
    means = {n: {k: [(c, float(np.mean(v))) for c, v in sorted(d.items())] for k, d in per.items()}
             for n, per in levels.items()}
    return {"free": free, "rows": rows, "levels": means, "ensemble_k": ensemble_k, "subsets": subsets}


def write_robustness(result: Mapping, out: Path) -> tuple[Path, Path]:
    """robustness.csv (one row per subset and node) and robustness.png (means per level)."""
    from video_pipeline.phgmae.plots import plot_curves

    out.mkdir(parents=True, exist_ok=True)
    path = out / "robustness.csv"
    kinds = ["single"] + (["ensemble"] if result["ensemble_k"] else [])
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["masked", "subset", "node", "metric", *kinds])
        for r in result["rows"]:
            w.writerow([r["masked"], "+".join(r["subset"]) or "(none)", r["node"], r["metric"],
                        *(_fmt(r[k]) for k in kinds)])
    series = {}
    for node, per in result["levels"].items():
        for kind, points in per.items():
            label = f"{node} single pass" if kind == "single" else f"{node} ensemble K={result['ensemble_k']}"
            series[label] = points
    metric = {"miou": "mIoU", "mean_abs_error": "mean absolute error"}[result["rows"][0]["metric"]]
    png = plot_curves(out / "robustness.png", f"{metric} as inputs go missing ({', '.join(result['free'])})",
                      series, xlabel="masked input modalities")
    return path, png


# ---------------------------------------------------------------------------------------- agreement
def agreement(paths: Sequence[str | Path], prediction: str, target: str, frames=None) -> dict:
    """A stored prediction against a stored target over the frames both have.

    Class modalities (class maps or probabilities, compared by label): {miou, pixel_agreement,
    iou: {class: v}} per store and pooled; others: {mean_abs_diff}. Classes come from the target's
    attrs (else the prediction's).
    """
    from video_pipeline.phgmae.consistency import LABEL_KINDS, to_labels

    per_store, pooled_cm, pooled_abs = {}, None, [0.0, 0]
    classes = None
    for path in paths:
        store = VideoStore.open(path)
        pa, ta = dict(store.array(prediction).attrs), dict(store.array(target).attrs)
        labels = pa.get("kind") in LABEL_KINDS and ta.get("kind") in LABEL_KINDS
        classes = list(ta.get("classes") or pa.get("classes") or [])
        positions = select_positions(store, frames)
        positions = positions[store.done_frames(prediction)[positions] & store.done_frames(target)[positions]]
        cm, absdiff = np.zeros((len(classes), len(classes)), np.int64), [0.0, 0]
        for p in positions:
            a, b = store.array(prediction)[int(p)], store.array(target)[int(p)]
            if labels:
                pl, tl = to_labels(a, pa)[..., 0].astype(np.int64), to_labels(b, ta)[..., 0].astype(np.int64)
                k = len(classes)
                ok = (pl < k) & (tl < k)
                cm += np.bincount(tl[ok] * k + pl[ok], minlength=k * k).reshape(k, k)
            else:
                d = np.abs(a.astype(np.float32) - b.astype(np.float32))
                ok = np.isfinite(d)
                absdiff[0] += float(d[ok].sum())
                absdiff[1] += int(ok.sum())
        if labels:
            per_store[str(path)] = _class_summary(cm, classes, len(positions))
            pooled_cm = cm if pooled_cm is None else pooled_cm + cm
        else:
            per_store[str(path)] = {"frames": int(len(positions)),
                                    "mean_abs_diff": absdiff[0] / absdiff[1] if absdiff[1] else None}
            pooled_abs = [pooled_abs[0] + absdiff[0], pooled_abs[1] + absdiff[1]]
    frames_total = sum(s["frames"] for s in per_store.values())
    overall = (_class_summary(pooled_cm, classes, frames_total) if pooled_cm is not None else
               {"frames": frames_total, "mean_abs_diff": pooled_abs[0] / pooled_abs[1] if pooled_abs[1] else None})
    return {"prediction": prediction, "target": target, "stores": per_store, "overall": overall}


def _class_summary(cm: np.ndarray, classes: Sequence[str], frames: int) -> dict:
    iou, _ = iou_f1(cm)
    seen = iou[~np.isnan(iou)]
    return {"frames": int(frames), "miou": float(seen.mean()) if len(seen) else None,
            "pixel_agreement": float(np.trace(cm) / cm.sum()) if cm.sum() else None,
            "iou": {c: (None if math.isnan(v) else round(float(v), 4)) for c, v in zip(classes, iou)}}


# ---------------------------------------------------------------------------------------- CLI
def main(args) -> int:
    """`vre analyze importance|robustness CKPT STORE... [-o DIR] ...` and
    `vre analyze agreement STORE... --prediction NAME --target NAME [--frames ...] [--json]`."""
    if args.analysis == "agreement":
        result = agreement(args.store, args.prediction, args.target, args.frames)
        if args.json:
            print(json.dumps(result, indent=1))
            return 0
        print(f"{args.prediction} against {args.target}")
        for name, s in [*result["stores"].items(), ("overall", result["overall"])]:
            if "miou" in s:
                print(f"  {name}: {s['frames']} frames  mIoU {_pct(s['miou'])}  "
                      f"pixel agreement {_pct(s['pixel_agreement'])}")
            else:
                print(f"  {name}: {s['frames']} frames  mean abs diff {s['mean_abs_diff']}")
        return 0
    if args.masks < 1 or args.batch_size < 1:
        raise VreError("--masks and --batch-size must be at least 1")
    loaded = load(args.checkpoint, pick_device(args.device))
    paths = [Path(s) for s in args.store]
    out = Path(args.output) if args.output else Path.cwd() / f"analysis_{loaded.path.stem}"
    if args.analysis == "importance":
        result = importance(loaded, paths, args.frames, args.masks, args.seed, args.batch_size)
        files = write_importance(result, out)
        print(f"{'target':<20}" + "".join(f"{m:>14}" for m in result["inputs"]))
        for n, row in zip(result["targets"], result["importance"]):
            print(f"{n:<20}" + "".join(f"{v:>14.4g}" if v is not None else f"{'-':>14}" for v in row))
        if getattr(args, "map", None):
            files = [*files, *write_importance_map(importance_map(loaded, paths, args.map, args.frames, args.masks,
                                                                  args.seed, args.batch_size), out)]
    elif args.analysis == "loss-matrix":
        result = loss_matrix(loaded, paths, args.frames, args.batch_size)
        path = out / "loss_matrix.csv"
        out.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["target", *result["columns"]])
            for n, row in zip(result["targets"], result["loss"]):
                w.writerow([n, *(_fmt(v) for v in row)])
        files = [path]
        print(f"{'target':<20}" + "".join(f"{m:>22}" for m in result["columns"]))
        for n, row in zip(result["targets"], result["loss"]):
            print(f"{n:<20}" + "".join(f"{v:>22.4g}" if v is not None else f"{'-':>22}" for v in row))
    else:
        result = robustness(loaded, paths, args.frames, args.masks, args.ensemble_k, args.seed, args.batch_size)
        files = write_robustness(result, out)
        for node, per in result["levels"].items():
            for kind, points in per.items():
                print(f"{node} {kind}: " + "  ".join(f"{c} masked: {v:.4f}" for c, v in points))
    (out / f"{args.analysis}.json").write_text(json.dumps(result, indent=1, default=lambda a: None))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"
