"""The PHG-MAE claims experiment: do mask ensembles beat a single pass, does masked training make a
model robust to missing experts, and does an RGB-only student stay within 3 mIoU of its teacher?

    python benchmarks/phgmae_claims/run.py --work WORK_DIR            # Toledo, CPU-sized defaults
    python benchmarks/phgmae_claims/run.py --work W --device cuda --threads 0 --workers 6 \\
        --steps 3000 --epochs 30 --size 540 720 --filters 10
    python benchmarks/phgmae_claims/run.py --work W --stores STORES/*.zarr \\
        --splits TRAIN VAL TEST --experts <expert modalities> --target semantic_output ...
        (stores of `vre import dronescapes`, each a scene, with the split names it recorded)

Steps, each skipped when its output exists in WORK_DIR (rerun to resume):
1. store: `vre run store.yaml VIDEO` (rgb; PiDiNet edges; the released PHG-MAE-Distil model's
   probabilities at a coarse size and on the mirrored frame: expert nodes carrying knowledge the
   student cannot compute from its small RGB input; the target: the released model at the
   footage's 4:3 aspect ratio, flip-averaged, as a class map). With --train-stores the stores are
   used as they are (e.g. an imported Dronescapes tree: every scene a store).
2. train: `vre train` for masking rate 0 and 0.5 (rgb always visible, the target an output) x the
   seeds; best.ckpt chosen on the validation frames (per-scene mIoU).
3. evaluate on the test frames, every figure through `phgmae.evaluate` (bootstrap over frames within
   scenes, paired differences): single full pass; K = 4/8/16 mask ensembles at the training rate
   and K = 8 at rates 0.25/0.75; flip averaging; the seed ensemble; 0..all experts missing (pooled
   over every subset of that size); each expert alone (argmax of its probabilities, when it has
   the target's classes).
4. distil: the ensemble with the best validation score among the rate-0.5 candidates is written
   into the training stores as probabilities and distilled (`vre distill`) into an RGB-only SafeUAV
   student under 1M parameters, scored on the test frames and compared with its teacher.
Writes WORK_DIR/results.json and WORK_DIR/table.md.

Toledo split (one 47-frame survey flight, frames 9-13 s apart along a line): train 0..26, a gap of
3 frames, validation 29..35, a gap of 3, test 38..47, so the test ground is not the training ground
(neighbouring frames overlap; frames three apart much less).
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RATES = (0.0, 0.5)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------- data
class Split:
    """Stores and frames of one split: [(store path, frame selection or None)], or the frames a
    store records under the split name `split` (stores made by `vre import dronescapes`)."""

    def __init__(self, items, split: str | None = None):
        self.items = [(Path(s), f) for s, f in items]
        self.split = split

    def config(self) -> dict:
        if self.split is not None:
            return {"stores": [str(s) for s, _ in self.items], "split": self.split}
        frames = {f for _, f in self.items}
        if len(frames) != 1:
            raise SystemExit("a split's stores must share one frame selection")
        return {"stores": [str(s) for s, _ in self.items], "frames": frames.pop()}

    def positions(self, store):
        """Positions int64 [N] of this split's frames in `store`."""
        from video_pipeline.phgmae.inference import select_positions

        if self.split is None:
            frames = next(f for s, f in self.items if Path(s).resolve() == Path(store.path).resolve())
        else:
            frames = [int(f) for f in (store.meta.get("splits") or {}).get(self.split, [])]
        return select_positions(store, frames)


def build_store(args) -> Path:
    store = args.work / "toledo.zarr"
    if not (store / "zarr.json").exists() or not _complete(store):
        log(f"store: vre run {HERE / 'store.yaml'} {args.video}")
        subprocess.run([sys.executable, "-m", "video_pipeline.cli", "run", str(HERE / "store.yaml"), str(args.video),
                        "-o", str(store), "--device", args.device], check=True)
    return store


def _complete(path: Path) -> bool:
    from video_pipeline.store import VideoStore

    s = VideoStore.open(path)
    wanted = ("rgb", "pidinet", "sem_coarse", "sem_mirror", "semantic")
    return all(n in s.names and s.done_frames(n).all() for n in wanted)


# ---------------------------------------------------------------------------------------- training
def train_config(args, rate: float, seed: int, out: Path) -> Path:
    inputs = ["rgb", *args.experts]
    cfg = {"output": str(out), "seed": seed, "epochs": args.epochs, "batch_size": args.batch_size,
           "steps_per_epoch": max(1, args.steps // args.epochs), "device": args.device,
           "data": {"train": args.train.config(), "validation": args.validation.config(),
                    "inputs": inputs, "outputs": ["semantic_output"],
                    "modalities": {"semantic_output": args.target},
                    "normalization": "standardization", "resolution": list(args.size), "num_workers": args.workers},
           "model": {"type": "safeuav", "parameters": {"num_filters": args.filters}},
           "masking": {"probability": rate, "always_visible": ["rgb"]},
           "losses": {"masked_only": True},
           "optimizer": {"lr": args.lr, "weight_decay": 0.01},
           "schedule": {"type": "cosine", "warmup_steps": max(1, args.steps // 10), "min_lr": args.lr / 100},
           "monitor": "semantic_output.miou_scenes"}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "train.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_all(args) -> dict[tuple[float, int], Path]:
    from video_pipeline.phgmae.train import main as train_main

    ckpts = {}
    for rate, seed in itertools.product(RATES, args.seeds):
        out = args.work / "runs" / f"rate{rate:g}_seed{seed}"
        done = out / "last.ckpt"
        if not (done.exists() and torch.load(done, weights_only=True, map_location="cpu")["epoch"] >= args.epochs):
            log(f"train: masking rate {rate:g}, seed {seed} -> {out}")
            t0 = time.perf_counter()
            train_main(train_config(args, rate, seed, out), device=args.device)
            log(f"train: {out.name} took {time.perf_counter() - t0:.0f} s")
        ckpts[(rate, seed)] = out / "best.ckpt"
    return ckpts


# ---------------------------------------------------------------------------------------- predictions
def masks_for(loaded, available, k: int, rate: float, seed: int) -> torch.Tensor:
    """bool [k, M]: row 0 the full hyperedge of `available`, rows 1.. drawn at `rate` (rgb always visible)."""
    from video_pipeline.phgmae.inference import ensemble_masks, ensemble_policy

    layout = loaded.layout
    hidden = [n for n in layout.names if n not in available]
    policy = ensemble_policy(layout, hidden, {"probability": rate, "always_visible": ["rgb"]})
    return ensemble_masks(policy, k, seed)


def probabilities(loaded, split: Split, masks: torch.Tensor, available, flip: bool = False,
                  batch_size: int = 4) -> np.ndarray:
    """float32 [N, K, H, W]: the mean over passes of the target node's probabilities, at the store's
    size, for every frame of the split (flip: also on the mirrored inputs, mirrored back, averaged)."""
    import torch.nn.functional as F

    from video_pipeline.phgmae.inference import frame_batches, run_passes
    from video_pipeline.store import VideoStore

    out = []
    for path, frames in split.items:
        store = VideoStore.open(path)
        size = tuple(store.array("rgb").shape[1:3])
        positions = split.positions(store)
        if not len(positions):
            continue
        for _, x, present, _ in frame_batches(loaded, path, available, positions, batch_size):
            views = [(x, False)] + ([(x.flip(-1), True)] if flip else [])
            total = 0
            for view, mirrored in views:
                raw = run_passes(loaded.model, view, present, masks, loaded.layout, ["semantic_output"])
                p = raw["semantic_output"].softmax(2).mean(0)                             # [B, K, h, w]
                total = total + (p.flip(-1) if mirrored else p)
            p = total / len(views)
            out.append(F.interpolate(p, size=size, mode="bilinear", align_corners=False).cpu().numpy())
    return np.concatenate(out)


def targets(split: Split, target: str) -> tuple[torch.Tensor, tuple[str, ...], tuple[int, ...]]:
    """Labels int64 [N, H, W] (255 none), the scene and the frame number of each frame."""
    from video_pipeline.store import VideoStore

    labels, scenes, numbers = [], [], []
    for path, _ in split.items:
        store = VideoStore.open(path)
        positions = split.positions(store)
        if not len(positions):
            continue
        t = store.read(target, positions).astype(np.float32)
        labels.append(np.nan_to_num(t[..., 0], nan=255) if t.shape[-1] == 1 else
                      np.where(np.isfinite(t).all(-1), np.nan_to_num(t).argmax(-1), 255))
        scenes += [path.stem] * len(positions)
        numbers += [int(v) for v in store.frame_numbers()[positions]]
    return torch.from_numpy(np.concatenate(labels).astype(np.int64)), tuple(scenes), tuple(numbers)


def expert_probabilities(split: Split, name: str) -> np.ndarray:
    from video_pipeline.store import VideoStore

    out = []
    for path, _ in split.items:
        store = VideoStore.open(path)
        positions = split.positions(store)
        if len(positions):
            out.append(store.read(name, positions).astype(np.float32).transpose(0, 3, 1, 2))
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------- experiment
def methods(loaded, args, split: Split, rate: float) -> dict[str, np.ndarray]:
    """name -> probabilities [N, K, H, W] of every inference method for one checkpoint."""
    full = ["rgb", *args.experts]
    q = rate if rate > 0 else 0.5
    out = {"single pass": probabilities(loaded, split, masks_for(loaded, full, 1, q, 0), full)}
    for k in (4, 8, 16):
        out[f"ensemble K={k}"] = probabilities(loaded, split, masks_for(loaded, full, k, q, 0), full)
    for r in (0.25, 0.75):
        out[f"ensemble K=8, rate {r:g}"] = probabilities(loaded, split, masks_for(loaded, full, 8, r, 0), full)
    out["flip averaging"] = probabilities(loaded, split, masks_for(loaded, full, 1, q, 0), full, flip=True)
    return out


def missing(loaded, args, split: Split, rate: float) -> dict[str, list[np.ndarray]]:
    """name -> [probabilities per subset]: single pass and K = 4 with c experts missing."""
    q = rate if rate > 0 else 0.5
    out = {}
    for c in range(len(args.experts) + 1):
        for gone in itertools.combinations(args.experts, c):
            available = ["rgb", *[e for e in args.experts if e not in gone]]
            out.setdefault(f"{c} missing, single", []).append(
                probabilities(loaded, split, masks_for(loaded, available, 1, q, 0), available))
            out.setdefault(f"{c} missing, K=4", []).append(
                probabilities(loaded, split, masks_for(loaded, available, 4, q, 0), available))
    return out


def scores(probs, labels, scenes, numbers, classes):
    """FrameScores of one method; probs [N, K, H, W] or a list of them (pooled per frame)."""
    from video_pipeline.phgmae.evaluate import FrameScores, frame_confusions

    arrays = probs if isinstance(probs, list) else [probs]
    cm = sum(frame_confusions(torch.from_numpy(p.argmax(1)), labels, len(classes)) for p in arrays)
    return FrameScores(cm, scenes, numbers, tuple(classes))


def pooled(parts):
    """Scores of several models on the same frames, summed frame by frame (one training recipe's
    expected score over its seeds; bootstrap draws frames, every seed's frame together)."""
    from video_pipeline.phgmae.evaluate import FrameScores

    first = parts[0]
    return FrameScores(sum(p.confusions for p in parts), first.scenes, first.frames, first.classes)


def run(args) -> dict:
    from video_pipeline.phgmae.evaluate import compare, summarize
    from video_pipeline.phgmae.inference import load, pick_device

    device = pick_device(args.device)
    ckpts = train_all(args)
    labels, scenes, numbers = targets(args.test, args.target)
    vlabels, vscenes, vnumbers = targets(args.validation, args.target)
    results, by_method, val_by_method, probs_cache = {}, {}, {}, {}
    classes = None
    for (rate, seed), path in ckpts.items():
        log(f"evaluate: rate {rate:g} seed {seed}")
        loaded = load(path, device)
        classes = loaded.layout.node("semantic_output").classes
        m = methods(loaded, args, args.test, rate)
        m.update(missing(loaded, args, args.test, rate))
        for name, p in m.items():
            by_method.setdefault((rate, name), {})[seed] = scores(p, labels, scenes, numbers, classes)
        for name in m if rate == RATES[-1] else ("single pass", "ensemble K=8"):
            if "missing" not in name:
                probs_cache[(rate, seed, name)] = m[name].astype(np.float16)
        if rate == RATES[-1]:  # teacher candidates, chosen on the validation frames
            vm = methods(loaded, args, args.validation, rate)
            for name, p in vm.items():
                val_by_method.setdefault(name, {})[seed] = (p, scores(p, vlabels, vscenes, vnumbers, classes))
    # seed ensembles: the mean of the seeds' probabilities
    for rate in RATES:
        for name in ("single pass", "ensemble K=8"):
            mean = sum(probs_cache[(rate, s, name)].astype(np.float32) for s in args.seeds) / len(args.seeds)
            by_method[(rate, f"seed ensemble of the {name}")] = {"all": scores(mean, labels, scenes, numbers, classes)}
    for name in args.experts:
        p = expert_probabilities(args.test, name)
        if p.shape[1] == len(classes):
            by_method[(None, f"expert alone: {name}")] = {"all": scores(p, labels, scenes, numbers, classes)}

    boot = dict(bootstrap=args.bootstrap, level=0.95)
    for (rate, name), per_seed in by_method.items():
        overall = pooled(list(per_seed.values()))
        row = {"rate": rate, "method": name, **summarize(overall, seed=0, **boot)}
        row["per_seed"] = {str(s): summarize(v, bootstrap=1)["miou_scenes"]["value"] for s, v in per_seed.items()}
        base = by_method.get((rate, "single pass"))
        if base is not None and name != "single pass":  # a seed ensemble against the seeds' single passes
            row["vs single pass"] = compare(overall, pooled(list(base.values())), seed=0, **boot)
        results[f"{rate}|{name}"] = row
    for name in [n for (r, n) in by_method if r == RATES[-1] and ("missing" in n or n == "single pass")]:
        a, b = by_method.get((RATES[-1], name)), by_method.get((RATES[0], name))
        if a and b:
            results[f"{RATES[-1]}|{name}"]["vs rate 0"] = compare(pooled(list(a.values())), pooled(list(b.values())),
                                                                 seed=0, **boot)
    results["teacher"] = distil(args, val_by_method, ckpts, device, labels, scenes, numbers, classes, probs_cache,
                                results, boot)
    return results


# ---------------------------------------------------------------------------------------- distillation
def distil(args, val_by_method, ckpts, device, labels, scenes, numbers, classes, probs_cache, results, boot) -> dict:
    from video_pipeline.phgmae.distill import main as distill_main
    from video_pipeline.phgmae.evaluate import compare, summarize
    from video_pipeline.phgmae.inference import load
    from video_pipeline.store import ArraySpec, VideoStore

    rate = RATES[-1]
    val = {name: summarize(pooled([s for _, s in per.values()]), bootstrap=1)["miou_scenes"]["value"]
           for name, per in val_by_method.items()}
    best = max(val, key=lambda n: val[n] or -1)
    log(f"distil: teacher = {best} over the rate {rate:g} seeds (validation mIoU {100 * val[best]:.2f})")
    name = "teacher_" + best.replace(" ", "_").replace(",", "").replace("=", "")
    full = ["rgb", *args.experts]
    q = rate
    for part, path, frames in [(p, s, f) for p in (args.train, args.validation) for s, f in p.items]:
        store = VideoStore.open(path, "r+")
        split = Split([(path, frames)], part.split)
        positions = split.positions(store)
        if not len(positions) or (name in store.names and store.done_frames(name)[positions].all()):
            continue
        parts = []
        for seed in args.seeds:
            loaded = load(ckpts[(rate, seed)], device)
            k = 1 if best in ("single pass", "flip averaging") else int(best.split("K=")[1].split(",")[0])
            r = float(best.split("rate ")[1]) if "rate " in best else q
            parts.append(probabilities(loaded, split, masks_for(loaded, full, k, r, 0), full,
                                       flip=best == "flip averaging"))
        teacher = (sum(parts) / len(parts)).transpose(0, 2, 3, 1).astype(np.float16)
        spec = ArraySpec(name, len(classes), "float16",
                         {"type": "bench/teacher", "kind": "semantic", "classes": list(classes),
                          "palette": [], "value_range": [0.0, 1.0], "channels": len(classes), "dtype": "float16",
                          "params": {"method": best, "seeds": list(args.seeds), "rate": rate}})
        store.write_array(spec, teacher, positions)
    out = args.work / "runs" / "student"
    cfg = {"output": str(out), "teacher": name, "labels": args.target,
           "data": {"train": args.train.config(), "validation": args.validation.config(), "rgb": "rgb",
                    "resolution": list(args.size), "num_workers": args.workers},
           "student": {"type": "safeuav", "parameters": {"num_filters": args.student_filters}},
           "loss": {"temperature": 2.0, "hard_weight": 0.0},
           "optimizer": {"lr": args.lr, "weight_decay": 0.01},
           "schedule": {"type": "cosine", "warmup_steps": max(1, args.steps // 10), "min_lr": args.lr / 100},
           "epochs": args.epochs, "batch_size": args.batch_size, "steps_per_epoch": max(1, args.steps // args.epochs),
           "seed": 0, "device": args.device}
    out.mkdir(parents=True, exist_ok=True)
    (out / "distill.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    if not (out / "report.json").exists():
        log("distil: vre distill")
        distill_main(out / "distill.yaml", device=args.device)
    student = load(out / "best.ckpt", device)
    p = probabilities(student, args.test, masks_for(student, ["rgb"], 1, 0.5, 0), ["rgb"])
    s = scores(p, labels, scenes, numbers, classes)
    params = sum(v.numel() for v in student.model.parameters())
    teacher_probs = sum(probs_cache[(rate, seed, best)].astype(np.float32) for seed in args.seeds) / len(args.seeds)
    teacher = scores(teacher_probs, labels, scenes, numbers, classes)
    single = scores(sum(probs_cache[(rate, seed, "single pass")].astype(np.float32) for seed in args.seeds)
                    / len(args.seeds), labels, scenes, numbers, classes)
    results[f"{rate}|teacher: seed ensemble of the {best}"] = {
        "rate": rate, "method": f"teacher: seed ensemble of the {best}", **summarize(teacher, seed=0, **boot),
        "vs seed ensemble of the single pass": compare(teacher, single, seed=0, **boot)}
    row = {"rate": None, "method": f"RGB-only student ({params:,} parameters)", **summarize(s, seed=0, **boot),
           "vs teacher": compare(s, teacher, seed=0, **boot)}
    results["student"] = row
    return {"method": best, "validation_miou": val, "modality": name, "parameters": params}


# ---------------------------------------------------------------------------------------- report
def pct(f) -> str:
    if f is None or f.get("value") is None:
        return "-"
    lo, hi = f["ci"]
    return f"{100 * f['value']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def render(results: dict) -> str:
    lines = ["| training masking | inference | test mIoU [95% CI] | per seed | Δ vs single pass [95% CI] | Δ vs rate 0 [95% CI] |",
             "|---|---|---|---|---|---|"]
    for key, r in results.items():
        if key == "teacher":
            continue
        rate = "-" if r["rate"] is None else f"{r['rate']:g}"
        seeds = ", ".join(f"{100 * v:.1f}" for v in (r.get("per_seed") or {}).values() if v is not None)
        delta = r.get("vs single pass") or r.get("vs teacher") or r.get("vs seed ensemble of the single pass")
        d = "-" if not delta else f"{100 * delta['value']:+.1f} [{100 * delta['ci'][0]:+.1f}, {100 * delta['ci'][1]:+.1f}]"
        if r.get("vs teacher"):
            d = "vs teacher: " + d
        elif r.get("vs seed ensemble of the single pass"):
            d = "vs seed ensemble of single passes: " + d
        v0 = r.get("vs rate 0")
        d0 = "-" if not v0 else f"{100 * v0['value']:+.1f} [{100 * v0['ci'][0]:+.1f}, {100 * v0['ci'][1]:+.1f}]"
        lines.append(f"| {rate} | {r['method']} | {pct(r['miou_scenes'])} | {seeds or '-'} | {d} | {d0} |")
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for the store, runs and results")
    p.add_argument("--video", type=Path, default=REPO.parent / "shared" / "data" / "uav_toledo.mp4")
    p.add_argument("--device", default="auto")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=50, help="optimizer steps of each training run")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--filters", type=int, default=6, help="SafeUAV num_filters of the PHG-MAE models")
    p.add_argument("--student-filters", type=int, default=6, help="SafeUAV num_filters of the student")
    p.add_argument("--size", type=int, nargs=2, default=[96, 128], help="training and inference H W")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--workers", type=int, default=0, help="data loader workers of the training runs")
    p.add_argument("--experts", nargs="+", default=["pidinet", "sem_coarse", "sem_mirror"])
    p.add_argument("--target", default="semantic")
    p.add_argument("--frames", nargs=3, default=["0..26", "29..35", "38..47"], metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default); one "
                   "thread is fastest on a CPU shared with other jobs")
    p.add_argument("--splits", nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                   help="with --stores: the split names the stores record (vre import dronescapes)")
    p.add_argument("--stores", nargs="+", type=Path, help="stores holding every split (with --splits)")
    p.add_argument("--train-stores", nargs="+", type=Path)
    p.add_argument("--validation-stores", nargs="+", type=Path)
    p.add_argument("--test-stores", nargs="+", type=Path)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.stores:
        if not args.splits:
            raise SystemExit("--stores needs --splits TRAIN VAL TEST")
        args.train, args.validation, args.test = (Split([(s, None) for s in args.stores], name)
                                                  for name in args.splits)
    elif args.train_stores:
        if not (args.validation_stores and args.test_stores):
            raise SystemExit("--train-stores needs --validation-stores and --test-stores")
        args.train, args.validation, args.test = (Split([(s, None) for s in stores]) for stores in
                                                  (args.train_stores, args.validation_stores, args.test_stores))
    else:
        store = build_store(args)
        args.train, args.validation, args.test = (Split([(store, f)]) for f in args.frames)
    results = run(args)
    results["_meta"] = {"seconds": round(time.perf_counter() - t0), "argv": sys.argv[1:], "device": args.device,
                        "threads": torch.get_num_threads()}
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    table = render({k: v for k, v in results.items() if k != "_meta"})
    (args.work / "table.md").write_text(table + "\n")
    print(table)
    log(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
