"""`vre train CONFIG`: the PHG-MAE training loop, top to bottom.

setup (config, device, output folder) -> resume from a checkpoint, or start fresh / from
`model.init` -> data (two StoreDatasets: training crops, whole validation frames) -> model,
optimizer, schedule -> per epoch: train, validate, log a line to metrics.jsonl, redraw the
curves, save last.ckpt (and best.ckpt when the monitored value improved). With
`masking.learned`, every `every`-th epoch also measures each free node's effect on the outputs'
validation loss and steps its masking probability (guided.py); the next epoch trains, and
validates, with the new probabilities, and checkpoints carry them as `learned_masking`.

Randomness: every epoch's shuffling, crops and masks are drawn from generators seeded with
(seed, epoch), so a run resumed after epoch e draws exactly what the uninterrupted run drew, and
validation masks come from one fixed seed so epochs are comparable. On CPU a fixed seed gives
bit-identical runs.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from video_pipeline.errors import Interrupted, VreError
from video_pipeline.phgmae.config import TrainConfig, learned_targets, load_config, mask_policy, parse_frames
from video_pipeline.phgmae.engine import (NodeLayout, StepSetup, dataset_statistics,
                                          evaluate, layout_from_dataset, lr_at, mean_fill, train_one_epoch,
                                          transfer_weights)
from video_pipeline.phgmae.guided import masking_effect, update
from video_pipeline.phgmae.inference import amp_dtype_for, pick_device, read_checkpoint, save_checkpoint
from video_pipeline.phgmae.losses import DEFAULT_LOSS, LOSS_KINDS, LossSpec
from video_pipeline.phgmae.model import build_model, count_parameters, to_checkpoint
from video_pipeline.phgmae.plots import plot_curves

# Config keys that may change between a checkpoint and the run resuming it.
RESUMABLE_CHANGES = ("epochs", "device", "path", "data.num_workers")


def main(config_path: str | Path, resume: str | Path | None = None, device: str | None = None) -> int:
    cfg = load_config(config_path)
    out = cfg.resolve(cfg.output)
    try:
        return run_training(cfg, out, resume, device)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_message(out)) from None


def interrupted_message(out: Path, resumes: bool = True) -> str:
    """What Ctrl-C kept: the epochs `last.ckpt` in `out` holds (metrics.jsonl has one line per epoch).
    `resumes`: whether rerunning the command resumes from it (`vre train`) or starts over (`vre distill`)."""
    log = out / "metrics.jsonl"
    lines = log.read_text().splitlines() if log.is_file() and (out / "last.ckpt").is_file() else []
    if not lines:
        return f"interrupted before the first epoch ended; nothing was saved in {out}"
    epoch = json.loads(lines[-1])["epoch"]
    rerun = "rerun the same command to resume from it" if resumes else "rerunning the command starts over"
    return f"interrupted; {out / 'last.ckpt'} holds epoch {epoch} (the epoch under way is lost); {rerun}"


def run_training(cfg: TrainConfig, out: Path, resume: str | Path | None, device: str | None) -> int:
    """The loop (see the module docstring); `out` is the config's output folder."""
    dev = pick_device(device or cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    print(f"output: {out} (last.ckpt, best.ckpt, metrics.jsonl, loss.png)")

    # ---- resume or start: what the checkpoint (if any) fixes
    if resume is None and (out / "last.ckpt").is_file():
        resume = out / "last.ckpt"
    state = read_checkpoint(Path(resume)) if resume else None
    if state is not None:
        check_resumable(cfg, state, Path(resume))
        print(f"resuming from {resume} (epoch {state['epoch']}, step {state['global_step']})")
    init = read_checkpoint(cfg.resolve(cfg.model.init)) if cfg.model.init and state is None else None

    # ---- data
    statistics = None
    if state is not None:
        statistics = dataset_statistics(NodeLayout.from_checkpoint(state), cfg.nodes)
    elif init is not None:
        statistics = init_statistics(cfg, init)
    train_ds, val_ds = build_datasets(cfg, statistics, compact=dev.type == "cuda")
    layout = layout_from_dataset(train_ds, cfg.nodes, cfg.data.outputs)
    if cfg.masking.fill == "mean":  # a resumed run keeps the values it started with
        fill = NodeLayout.from_checkpoint(state).fill if state is not None else mean_fill(train_ds, layout)
        layout = dataclasses.replace(layout, fill=fill)
    specs = loss_specs(cfg, layout)

    # ---- model, optimizer, schedule
    model_cfg = {"type": cfg.model.type,
                 "parameters": {**cfg.model.parameters, "in_channels": layout.total_channels,
                                "out_channels": layout.total_channels}}
    torch.manual_seed(cfg.seed)
    try:
        model = build_model(model_cfg)
    except (TypeError, ValueError) as err:
        raise VreError(f"{cfg.path}: model: cannot build a {cfg.model.type} with parameters "
                       f"{dict(cfg.model.parameters)}: {err}") from None
    if init is not None:
        shared = transfer_weights(model, model_cfg, layout, init)
        print(f"model.init: weights of nodes {shared} from {cfg.model.init}")
    model.to(dev)
    optimizer = make_optimizer(model, cfg)
    amp_dtype = amp_dtype_for(dev) if cfg.amp else None
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    steps_per_epoch = cfg.steps_per_epoch or max(1, len(train_ds) // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    epoch, step, best = 0, 0, None
    if state is not None:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        epoch, step, best = int(state["epoch"]), int(state["global_step"]), state.get("best")
    setup = StepSetup(layout, mask_policy(cfg), specs, cfg.losses.masked_only, dev, amp_dtype)
    guide = cfg.masking.learned
    if guide is not None:  # the probabilities to learn: the configured ones, or where the checkpoint left them
        probability = ({n: setup.policy.node_probability(n) for n in setup.policy.free} if state is None
                       else dict(state["learned_masking"]))
        setup.policy = dataclasses.replace(setup.policy, probability=probability)
    cfg_dict = layout.cfg(model_cfg, cfg.to_dict())
    log = out / "metrics.jsonl"
    truncate_log(log, epoch)
    print(f"{len(train_ds)} training / {len(val_ds)} validation samples, nodes {layout.names} "
          f"({layout.total_channels} channels), {cfg.model.type} with {count_parameters(model):,} "
          f"parameters on {dev}; {steps_per_epoch} steps of {cfg.batch_size} per epoch")

    monitor = resolve_monitor(cfg.monitor, layout)

    # ---- the loop
    while epoch < cfg.epochs:
        s_torch, s_loader, s_mask = epoch_seeds(cfg.seed, epoch)
        torch.manual_seed(s_torch)
        loader = train_loader(train_ds, cfg, steps_per_epoch, s_loader, dev)
        with step_bar(loader, steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}") as batches:
            train, step = train_one_epoch(
                model, batches, setup, optimizer, scaler, lambda s: lr_at(s, total_steps, cfg.optimizer.lr, cfg.schedule),
                step, torch.Generator().manual_seed(s_mask), cfg.grad_clip, where=f"epoch {epoch + 1}, ",
                prepare=train_ds.to_float if train_ds.compact else None)
        val = evaluate(model, eval_loader(val_ds, cfg, dev), setup,
                       torch.Generator().manual_seed(validation_seed(cfg.seed)),
                       prepare=val_ds.to_float if val_ds.compact else None)
        effect = None
        if guide is not None and (epoch + 1) % guide.every == 0:
            effect = masking_effect(model, eval_loader(val_ds, cfg, dev), setup, learned_targets(cfg), guide.masks,
                                    torch.Generator().manual_seed(effect_seed(cfg.seed, epoch)),
                                    prepare=val_ds.to_float if val_ds.compact else None)
            setup.policy = dataclasses.replace(setup.policy, probability=update(
                setup.policy.probability, effect.effect, effect.loss, guide.rate, guide.min, guide.max))
        epoch += 1
        value = monitored(val, monitor)
        improved = value is not None and (best is None or (value > best if maximised(monitor) else value < best))
        best = value if improved else best
        record = {"epoch": epoch, "step": step, "lr": lr_at(step - 1, total_steps, cfg.optimizer.lr, cfg.schedule),
                  "train": {"loss": train["loss"], "nodes": train["nodes"]}, "validation": val,
                  "monitor": monitor, "best": best, **throughput(train), "device": str(dev)}
        if guide is not None:  # the probabilities after this epoch's update: what the next epoch uses
            record["masking"] = dict(setup.policy.probability)
        if effect is not None:
            record["masking_effect"] = effect.effect
        with log.open("a") as f:
            f.write(json.dumps(record) + "\n")
        ckpt = to_checkpoint(model, cfg_dict, layout.statistics, epoch=epoch, global_step=step, best=best,
                             optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                             **({"learned_masking": record["masking"]} if guide is not None else {}))
        # best before last: last.ckpt says the epoch is done, so a crash between the two must not
        # leave this epoch's best.ckpt unwritten (the resumed run redoes the epoch instead)
        if improved:
            save_checkpoint(ckpt, out / "best.ckpt")
        save_checkpoint(ckpt, out / "last.ckpt")
        draw_curves(log, out)
        print(epoch_line(record, cfg.epochs, improved))
    return 0


# ---------------------------------------------------------------------------------------- setup
def check_resumable(cfg: TrainConfig, state: dict, path: Path) -> None:
    """A checkpoint resumes this config only if they differ in RESUMABLE_CHANGES alone."""
    if "optimizer" not in state or "train" not in state["hyper_parameters"]["cfg"]:
        raise VreError(f"{path}: not a checkpoint of `vre train` (no optimizer state); start from it "
                       f"with model.init instead of --resume")
    before, now = _flatten(state["hyper_parameters"]["cfg"]["train"]), _flatten(cfg.to_dict())
    changed = sorted(k for k in set(before) | set(now)
                     if before.get(k) != now.get(k) and not k.startswith(RESUMABLE_CHANGES))
    if changed:
        raise VreError(f"{cfg.path}: differs from the config of {path} in {', '.join(changed)}; restore "
                       f"those keys, or train into another output folder")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def init_statistics(cfg: TrainConfig, init: dict) -> dict:
    """Statistics for the nodes `model.init` knows: its pretrained weights expect inputs
    normalized the way they were trained, not with this data's statistics."""
    src = NodeLayout.from_checkpoint(init)
    if src.normalization != cfg.data.normalization:
        raise VreError(f"{cfg.path}: model.init was trained with normalization {src.normalization}; "
                       f"set data.normalization: {src.normalization}")
    shared = [n for n in cfg.nodes if n in src.names]
    renamed = dataclasses.replace(src, nodes=tuple(dataclasses.replace(n, modality=cfg.modality(n.name))
                                                   for n in src.nodes))
    return dataset_statistics(renamed, shared)


def build_datasets(cfg: TrainConfig, statistics: dict | None, compact: bool = False):
    """(training dataset with random crops, validation dataset of whole frames, same statistics).

    compact: loader workers hand over the stored uint8/float16 frames and `to_float` converts them
    on the training device (a third of the bytes to move; right for a GPU, while on a CPU the
    conversion is better done in the workers, in parallel with the step).
    """
    from video_pipeline.dataset import StoreDataset, is_class_map
    from video_pipeline.store import VideoStore

    modalities = [cfg.modality(n) for n in cfg.nodes]
    datasets = []
    for split in ("train", "validation"):
        sel = getattr(cfg.data, split)
        try:
            stores = [VideoStore.open(cfg.resolve(s)) for s in sel.stores]
            for store in stores:
                check_provenance(cfg, store)
            # probabilities (semantic, several channels) are targets as they are, like class maps
            normalization = {m: "none" if _is_semantic(stores, m, is_class_map) else cfg.data.normalization
                             for m in modalities}
            datasets.append(StoreDataset(
                [s.path for s in stores], modalities=modalities, frames=parse_frames(sel.frames),
                split=sel.split, splits_file=cfg.resolve(sel.splits_file) if sel.splits_file else None,
                resolution=cfg.data.resolution, normalization=normalization, missing=cfg.data.missing,
                crop=cfg.data.crop if split == "train" else None, compact=compact,
                statistics=statistics if split == "train" else datasets[0].statistics))
        except VreError as err:
            raise VreError(f"{cfg.path}: data.{split}: {err}") from None
    train, val = datasets
    if val.size != train.size:
        raise VreError(f"{cfg.path}: training frames are {train.size}, validation frames {val.size}; "
                       f"set data.resolution")
    return train, val


def derived_from(store, modality: str, sources: set[str]) -> list[str] | None:
    """The chain [modality, dep, ..., source] by which a store array was computed from one of
    `sources` (its attrs' `deps`, followed through the store), or None if it was not."""
    stack, seen = [[modality]], set()
    while stack:
        chain = stack.pop()
        name = chain[-1]
        if name in seen or name not in store.names:
            continue
        seen.add(name)
        for dep in dict(store.array(name).attrs).get("deps") or ():
            if dep in sources:
                return [*chain, dep]
            stack.append([*chain, dep])
    return None


def check_provenance(cfg: TrainConfig, store) -> None:
    """Refuse an input computed (by store provenance) from an output's modality: e.g. a binary map
    derived from the semantic map the model learns to predict would hand it the answer."""
    outputs = {cfg.modality(n): n for n in cfg.data.outputs}
    for node in cfg.data.inputs:
        chain = derived_from(store, cfg.modality(node), set(outputs))
        if chain:
            raise VreError(f"data.inputs: '{node}' is computed from the output '{outputs[chain[-1]]}' in {store.path} "
                           f"({' <- '.join(chain)}): the model would see its answer; remove it from data.inputs")


def _is_semantic(stores, modality: str, is_class_map) -> bool:
    for store in stores:
        if modality in store.names:
            attrs = dict(store.array(modality).attrs)
            return attrs.get("kind") == "semantic" or is_class_map(attrs)
    return False


def loss_specs(cfg: TrainConfig, layout: NodeLayout) -> dict[str, LossSpec]:
    """Each node's LossSpec: the config's, with the type defaulting by kind (ce / kl / l2)."""
    specs = {}
    for node in layout.nodes:
        c = cfg.losses.nodes.get(node.name)
        kind = (c.type if c and c.type else None) or DEFAULT_LOSS[node.kind]
        if node.kind not in LOSS_KINDS[kind]:
            raise VreError(f"{cfg.path}: losses.nodes.{node.name}.type {kind} does not fit a {node.kind} node "
                           f"(use {' or '.join(k for k, kinds in LOSS_KINDS.items() if node.kind in kinds)})")
        weights = tuple(c.class_weights) if c and c.class_weights is not None else None
        if weights is not None and (kind != "ce" or len(weights) != node.channels):
            raise VreError(f"{cfg.path}: losses.nodes.{node.name}.class_weights needs a ce loss and "
                           f"{node.channels} values (one per class of {list(node.classes)})")
        specs[node.name] = LossSpec(kind, c.weight if c else 1.0, c.temperature if c else 1.0, weights)
    return specs


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on weight matrices and kernels only (not on biases and norm scales)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.optimizer.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.optimizer.lr, betas=tuple(cfg.optimizer.betas))


# ---------------------------------------------------------------------------------------- loaders
def epoch_seeds(seed: int, epoch: int) -> tuple[int, int, int]:
    """Seeds for (torch's global RNG, the loader: order and worker crops, the masks) of one epoch."""
    return tuple(int(s) for s in np.random.SeedSequence([seed, epoch]).generate_state(3))


def effect_seed(seed: int, epoch: int) -> int:
    """Seed of the base masks of epoch `epoch`'s masking.learned estimate: the 4th word of the
    epoch's seed stream (its first three are `epoch_seeds`)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(4)[3])


def validation_seed(seed: int) -> int:
    return int(np.random.SeedSequence([seed, 2 ** 31]).generate_state(1)[0])


def train_loader(dataset, cfg: TrainConfig, steps: int, seed: int, dev: torch.device):
    """`steps` full batches of shuffled samples (several passes if the dataset is small).

    The dataset is copied first: a copy opens its own readers and draws its crops from the seed
    torch has when it first reads (as a DataLoader worker does), so crops depend on the epoch only.
    """
    g = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=steps * cfg.batch_size, generator=g)
    return torch.utils.data.DataLoader(copy.copy(dataset), batch_size=cfg.batch_size, sampler=sampler,
                                       num_workers=cfg.data.num_workers, generator=g,
                                       pin_memory=dev.type == "cuda", drop_last=True)


def eval_loader(dataset, cfg: TrainConfig, dev: torch.device):
    return torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False,
                                       num_workers=cfg.data.num_workers, pin_memory=dev.type == "cuda")


# ---------------------------------------------------------------------------------------- records
def resolve_monitor(monitor: str, layout: NodeLayout) -> str:
    """`auto`: the per-scene mIoU (the Dronescapes figure) of the first class or soft output, else
    the validation loss; any other value as it is."""
    if monitor != "auto":
        return monitor
    classes = [n for n in layout.outputs if layout.node(n).kind in ("class", "soft")]
    return f"{classes[0]}.miou_scenes" if classes else "loss"


def maximised(monitor: str) -> bool:
    return monitor.endswith((".miou", ".miou_scenes"))


def monitored(val: dict, monitor: str) -> float | None:
    if monitor == "loss":
        return val["loss"]
    node, _, what = monitor.rpartition(".")
    return val["nodes"].get(node, {}).get(what)


def throughput(train: dict) -> dict:
    """samples/s and the share of step time spent waiting for data, in the steady state: without
    the epoch's first step, whose wait includes starting the loader workers (unless it is the only one)."""
    first = train["first_step"] if train["steps"] > 1 else {"samples": 0, "seconds": 0.0, "data_seconds": 0.0}
    seconds = max(train["seconds"] - first["seconds"], 1e-9)
    return {"samples_per_s": (train["samples"] - first["samples"]) / seconds,
            "data_wait_share": (train["data_seconds"] - first["data_seconds"]) / seconds,
            "epoch_seconds": train["seconds"]}


def truncate_log(log: Path, epoch: int) -> None:
    """Keep only the metrics lines of epochs up to `epoch` (a resumed run rewrites the rest)."""
    if not log.exists():
        return
    lines = [ln for ln in log.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= epoch]
    log.write_text("".join(ln + "\n" for ln in lines))


def read_log(log: Path) -> list[dict]:
    return [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]


def step_bar(batches, steps: int, desc: str):
    """A progress bar on stderr over one epoch's `batches`, one tick per optimizer step; cleared when
    the epoch ends (its line follows) or is interrupted. Used as a context manager. Every step is
    drawn (no refresh interval): a redraw costs microseconds, an optimizer step milliseconds."""
    from tqdm import tqdm

    return tqdm(batches, total=steps, desc=desc, unit="step", leave=False, dynamic_ncols=True, mininterval=0)


def draw_curves(log: Path, out: Path) -> None:
    """loss.png (training and validation loss, per node) and miou.png (class nodes)."""
    records = read_log(log)
    series = {"train": [(r["epoch"], r["train"]["loss"]) for r in records],
              "validation": [(r["epoch"], r["validation"]["loss"]) for r in records]}
    nodes = list(records[-1]["validation"]["nodes"]) if records else []
    for node in nodes:
        series[f"val {node}"] = [(r["epoch"], r["validation"]["nodes"].get(node, {}).get("loss")) for r in records]
    plot_curves(out / "loss.png", "loss (validation per node)", series, log_y=True)
    miou = {}
    for node in nodes:
        if "miou" in records[-1]["validation"]["nodes"][node]:
            miou[f"{node} mIoU"] = [(r["epoch"], r["validation"]["nodes"][node].get("miou")) for r in records]
            miou[f"{node} per-scene"] = [(r["epoch"], r["validation"]["nodes"][node].get("miou_scenes"))
                                         for r in records]
    if miou:
        plot_curves(out / "miou.png", "validation mean IoU", miou)


def epoch_line(r: dict, epochs: int, improved: bool) -> str:
    parts = [f"epoch {r['epoch']}/{epochs}", f"train {r['train']['loss']:.4f}", f"val {r['validation']['loss']:.4f}"]
    for node, m in r["validation"]["nodes"].items():
        if m.get("miou") is not None:
            parts.append(f"{node} mIoU {m['miou']:.3f}")
    if "masking" in r:
        parts.append("masking " + " ".join(f"{n} {p:.2f}" for n, p in r["masking"].items()))
    parts += [f"{r['samples_per_s']:.1f} samples/s", f"data wait {r['data_wait_share']:.0%}"]
    return "  ".join(parts) + ("  (best)" if improved else "")
