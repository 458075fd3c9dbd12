"""The temporal-consistency claim of the PHG-MAE experiment: are mask and seed ensembles more
consistent along the true motion than a single pass?

    python benchmarks/virtual_flight.py clip ../shared/data/uav_toledo/DJI_0103.jpg flight.mp4 \\
        --frames 12 --size 96 128 --scale 0.1333 --step 1 2
    vre run flight.yaml flight.mp4 -o flight.zarr        # store.yaml with resolution [96, 128]
    python benchmarks/virtual_flight.py flow flight.zarr --step 1 2
    python benchmarks/phgmae_claims/consistency.py --work runs/claims --store flight.zarr

DJI_0103 is frame 42 of the Toledo flight, inside the test range of run.py, at the ground scale the
models were trained at (1200 px -> 160 px). For every checkpoint of run.py (masking 0 and 0.5, each
seed) it predicts every frame of the flight with the single pass and with the K = 8 mask ensemble,
and the seed ensembles of both; consistency is the share of valid pixels whose label at t equals the
label at t + 1 where the true flow carries it (`phgmae/consistency.py`). Intervals: bootstrap over
the frame pairs; differences paired (the same pairs). Writes WORK/consistency.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as experiment  # noqa: E402  (the sibling script: Split, masks_for, probabilities, RATES)


def pair_counts(labels: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """labels uint8 [T, H, W]; flow float [T, H, W, 2] -> float64 [T-1, 2]: (equal, compared) per pair."""
    from video_pipeline.phgmae.consistency import compare, follow

    out = []
    for t in range(len(labels) - 1):
        x, y, valid = follow([flow[t]])
        out.append(compare(labels[t][..., None], labels[t + 1][..., None], x, y, valid, True))
    return np.asarray(out, np.float64)


def bootstrap(counts: dict[str, np.ndarray], base: str, n: int = 2000, seed: int = 0) -> dict:
    """{name: {value, ci, vs_base: {value, ci}}}: agreement = sum equal / sum compared over pairs."""
    rng = np.random.default_rng(seed)
    pairs = len(next(iter(counts.values())))
    draws = rng.multinomial(pairs, np.full(pairs, 1.0 / pairs), size=n)              # [n, P]
    rep = {k: (draws @ c[:, 0]) / np.maximum(draws @ c[:, 1], 1) for k, c in counts.items()}
    out = {}
    for k, c in counts.items():
        value = c[:, 0].sum() / max(c[:, 1].sum(), 1)
        row = {"value": float(value), "ci": [float(v) for v in np.quantile(rep[k], [0.025, 0.975])]}
        if k != base:
            b = counts[base][:, 0].sum() / max(counts[base][:, 1].sum(), 1)
            row["vs " + base] = {"value": float(value - b),
                                 "ci": [float(v) for v in np.quantile(rep[k] - rep[base], [0.025, 0.975])]}
        out[k] = row
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="the --work folder of run.py (its runs/)")
    p.add_argument("--store", type=Path, required=True, help="the virtual flight's store, with flow_true")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--experts", nargs="+", default=["pidinet", "sem_coarse", "sem_mirror"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from video_pipeline.phgmae.inference import load, pick_device
    from video_pipeline.store import VideoStore

    device = pick_device(args.device)
    store = VideoStore.open(args.store)
    flow = store.read("flow_true", np.arange(store.n_frames)).astype(np.float32)
    split = experiment.Split([(args.store, None)])
    full = ["rgb", *args.experts]
    probs = {}
    for rate in experiment.RATES:
        for seed in args.seeds:
            loaded = load(args.work / "runs" / f"rate{rate:g}_seed{seed}" / "best.ckpt", device)
            q = rate if rate > 0 else 0.5
            for name, k in (("single pass", 1), ("ensemble K=8", 8)):
                pr = experiment.probabilities(loaded, split, experiment.masks_for(loaded, full, k, q, 0), full)
                probs.setdefault((rate, name), []).append(pr)
    result = {}
    target = store.read("semantic", np.arange(store.n_frames))[..., 0]
    for rate in experiment.RATES:
        c, agree = {}, {}
        for name in ("single pass", "ensemble K=8"):
            labels = [pr.argmax(1).astype(np.uint8) for pr in probs[(rate, name)]]
            c[name] = sum(pair_counts(lab, flow) for lab in labels)  # the seeds pooled pair by pair
            agree[name] = float(np.mean([(lab == target).mean() for lab in labels]))
            mean = (sum(probs[(rate, name)]) / len(args.seeds)).argmax(1).astype(np.uint8)
            c[f"seed ensemble of the {name}"] = pair_counts(mean, flow)
            agree[f"seed ensemble of the {name}"] = float((mean == target).mean())
        result[f"{rate:g}"] = bootstrap(c, "single pass")
        for name, v in agree.items():
            result[f"{rate:g}"][name]["pixel_agreement_with_target"] = v
    result["target (flip-averaged released model)"] = bootstrap({"target": pair_counts(target, flow)}, "target")
    (args.work / "consistency.json").write_text(json.dumps(result, indent=1))
    print("| masking | prediction | agreement along the true flow [95% CI] | Δ vs single pass [95% CI] | "
          "pixels equal to the target |")
    print("|---|---|---|---|---|")
    for rate, rows in result.items():
        for name, r in rows.items():
            d = r.get("vs single pass")
            delta = "-" if not d else f"{100 * d['value']:+.2f} [{100 * d['ci'][0]:+.2f}, {100 * d['ci'][1]:+.2f}]"
            acc = r.get("pixel_agreement_with_target")
            print(f"| {rate} | {name} | {100 * r['value']:.2f} [{100 * r['ci'][0]:.2f}, {100 * r['ci'][1]:.2f}] "
                  f"| {delta} | {'-' if acc is None else f'{100 * acc:.1f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
