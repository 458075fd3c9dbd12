"""`vre distill CONFIG`: an RGB-only student trained to match a teacher's soft class outputs.

The teacher is a stored modality of class probabilities, typically written by `vre ensemble`. The
student is a SafeUAV (num_filters 6 / 10 / 16: about 150k / 430k / 1M parameters) or timm U-Net with
the released PHG-MAE-Distil layout: nodes `rgb` (3 channels, standardized with the training frames'
statistics) and `semantic_output` (one channel per class), the same channels in and out, the
semantic input always zero. Its checkpoint therefore runs in `vre run` through the
`semantic/phgmae-distil` expert (which expects the 8 Dronescapes classes) and in `vre ensemble`.

Loss per pixel: T^2 KL(teacher_T || student_T) with both distributions softened by the temperature
T (losses.node_loss, kind "kl"), plus `hard_weight` x cross-entropy against `labels` (a stored class
map or class probabilities) when given. Each epoch ends with a validation pass: the student's mean
IoU and pixel agreement with the teacher's top class, and, with labels, the mIoU of student and
teacher against them. Written to the output folder: metrics.jsonl, agreement.png, last.ckpt,
best.ckpt (best agreement mIoU) and report.json (parameters, frames/s, agreement of best.ckpt).

Config keys (relative paths are relative to the config file):
    output: runs/student
    teacher: ensemble_semantic_output    # store modality with the teacher's probabilities
    labels: semantic                     # optional: hard labels (class map or probabilities)
    data: {train: {stores: [...], frames: 0..37}, validation: {stores: [...], frames: 37..47},
           rgb: rgb, resolution: null, crop: [240, 320], num_workers: 2}
    student: {type: safeuav, parameters: {num_filters: 10}, init: null}   # init: a checkpoint
    loss: {temperature: 2.0, hard_weight: 0.0}
    optimizer: {lr: 0.005, weight_decay: 0.01}
    schedule: {type: cosine, warmup_steps: 20, min_lr: 0.0001}
    epochs: 40, batch_size: 8, steps_per_epoch: null, seed: 0, device: auto
"""
from __future__ import annotations

import dataclasses
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from video_pipeline.errors import Interrupted, RecipeError, VreError
from video_pipeline.phgmae.config import (RANGE_RE, ConfigFile, FramesConfig, ModelConfig, OptimizerConfig,
                                          ScheduleConfig, parse_frames, parse_section)
from video_pipeline.phgmae.engine import NodeLayout, Node, layout_from_dataset, lr_at, target_labels, transfer_weights
from video_pipeline.phgmae.inference import amp_dtype_for, pick_device, read_checkpoint, save_checkpoint
from video_pipeline.phgmae.losses import LossSpec, node_loss
from video_pipeline.phgmae.metrics import ClassMetrics
from video_pipeline.phgmae.model import build_model, count_parameters, to_checkpoint
from video_pipeline.recipe import DEVICE_RE
from video_pipeline.yamlio import load_yaml

RGB, SEMANTIC = "rgb", "semantic_output"  # the node names of the released PHG-MAE-Distil checkpoints


# ---------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DistillData:
    train: FramesConfig
    validation: FramesConfig
    rgb: str = "rgb"
    resolution: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    num_workers: int = 2


@dataclass(frozen=True)
class DistillLoss:
    temperature: float = 2.0
    hard_weight: float = 0.0


@dataclass(frozen=True)
class DistillConfig(ConfigFile):
    output: str
    teacher: str
    data: DistillData
    labels: str | None = None
    student: ModelConfig = field(default_factory=ModelConfig)
    loss: DistillLoss = field(default_factory=DistillLoss)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: int = 20
    batch_size: int = 8
    steps_per_epoch: int | None = None
    seed: int = 0
    device: str = "auto"
    path: Path = Path("distill.yaml")  # the file it was read from (not a key)


def load_distill_config(path: str | Path) -> DistillConfig:
    """Read and validate a distillation config. Raises RecipeError `FILE:LINE: ...`."""
    path = Path(path)
    data = load_yaml(path, "distillation config")
    cfg = dataclasses.replace(parse_section(DistillConfig, data, "", path, 1), path=path)

    def fail(key: str, msg: str):
        raise RecipeError(f"{path}:{data.line_of(key) if key in data else data.line}: {msg}")

    if cfg.loss.temperature <= 0 or cfg.loss.hard_weight < 0:
        fail("loss", "loss.temperature must be > 0 and loss.hard_weight >= 0")
    if cfg.loss.hard_weight > 0 and not cfg.labels:
        fail("loss", "loss.hard_weight needs `labels`: the store modality with the hard labels")
    if cfg.teacher in (cfg.data.rgb, cfg.labels):
        fail("teacher", f"teacher '{cfg.teacher}' must differ from data.rgb and labels")
    for split in ("train", "validation"):
        sel = getattr(cfg.data, split)
        if not sel.stores:
            fail("data", f"data.{split}.stores must list at least one store")
        if isinstance(sel.frames, str) and not RANGE_RE.match(sel.frames):
            fail("data", f"data.{split}.frames must be A..B (end-exclusive), A.., ..B or a list")
    for key, low in (("epochs", 1), ("batch_size", 1), ("steps_per_epoch", 1)):
        v = getattr(cfg, key)
        if v is not None and v < low:
            fail(key, f"{key} must be >= {low}, got {v}")
    if not DEVICE_RE.match(cfg.device):
        fail("device", f"device must be auto, cpu, mps, cuda or cuda:N, got {cfg.device!r}")
    if {"in_channels", "out_channels"} & set(cfg.student.parameters):
        fail("student", "student.parameters: in_channels/out_channels are set from the classes; remove them")
    return cfg


# ---------------------------------------------------------------------------------------- data
def build_datasets(cfg: DistillConfig, statistics: dict | None):
    """(training dataset with crops, validation dataset) over [rgb, teacher, labels?]; frames
    without the teacher (or labels) are dropped. rgb is standardized (the expert's convention)."""
    from video_pipeline.dataset import StoreDataset

    modalities = [cfg.data.rgb, cfg.teacher] + ([cfg.labels] if cfg.labels else [])
    out = []
    for split in ("train", "validation"):
        sel = getattr(cfg.data, split)
        try:
            ds = StoreDataset([cfg.resolve(s) for s in sel.stores], modalities=modalities,
                              frames=parse_frames(sel.frames), split=sel.split,
                              splits_file=cfg.resolve(sel.splits_file) if sel.splits_file else None,
                              resolution=cfg.data.resolution, normalization={cfg.data.rgb: "standardization"},
                              statistics=statistics if split == "train" else out[0].statistics,
                              missing="drop", crop=cfg.data.crop if split == "train" else None)
        except VreError as err:
            raise VreError(f"{cfg.path}: data.{split}: {err}") from None
        out.append(ds)
    teacher = out[0].specs[cfg.teacher]
    if teacher.kind != "semantic" or teacher.class_map or not teacher.classes:
        raise VreError(f"{cfg.path}: teacher '{cfg.teacher}' must hold class probabilities (kind semantic, "
                       f"one channel per class, with class names), e.g. the output of `vre ensemble`")
    if cfg.labels and out[0].specs[cfg.labels].kind != "semantic":
        raise VreError(f"{cfg.path}: labels '{cfg.labels}' must be a class map or class probabilities")
    return out


def student_layout(dataset, cfg: DistillConfig) -> NodeLayout:
    """The released layout: rgb (standardized) and semantic_output (the teacher's classes)."""
    return layout_from_dataset(dataset, [RGB, SEMANTIC], [SEMANTIC])


def labels_of(batch: dict, cfg: DistillConfig, dataset, name: str, device) -> torch.Tensor:
    """Class labels int64 [B, H, W] (255 = none) of a class map or probability modality."""
    spec = dataset.specs[name]
    node = Node(name, "class" if spec.class_map else "soft", len(spec.classes), name)
    return target_labels(node, batch[name].to(device))


def student_input(rgb: torch.Tensor, layout: NodeLayout) -> torch.Tensor:
    """rgb float32 [B, 3, H, W] (standardized) -> the model input [B, 3 + K, H, W], semantic zeros."""
    x = torch.zeros(rgb.shape[0], layout.total_channels, *rgb.shape[2:], device=rgb.device)
    x[:, layout.slice(RGB)] = rgb.nan_to_num(0.0)
    return x


# ---------------------------------------------------------------------------------------- loop
def main(config_path: str | Path, device: str | None = None) -> int:
    from video_pipeline.phgmae.train import interrupted_message

    cfg = load_distill_config(config_path)
    out = cfg.resolve(cfg.output)
    try:
        return distill(cfg, out, device)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_message(out, resumes=False)) from None


def distill(cfg: DistillConfig, out: Path, device: str | None) -> int:
    """The loop (see the module docstring); `out` is the config's output folder."""
    from video_pipeline.phgmae.train import epoch_seeds, eval_loader, make_optimizer, step_bar, train_loader

    dev = pick_device(device or cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    print(f"output: {out} (last.ckpt, best.ckpt, metrics.jsonl, report.json)")
    init = read_checkpoint(cfg.resolve(cfg.student.init)) if cfg.student.init else None
    statistics = None
    if init is not None:  # pretrained weights expect rgb normalized the way they were trained
        stats = NodeLayout.from_checkpoint(init).statistics.get(RGB)
        statistics = {cfg.data.rgb: dict(zip(("min", "max", "mean", "std"), stats))} if stats else None
    train_ds, val_ds = build_datasets(cfg, statistics)
    layout = student_layout(train_ds, cfg)
    classes = layout.node(SEMANTIC).classes
    channels = {"in_channels": layout.total_channels, "out_channels": layout.total_channels}
    model_cfg = {"type": cfg.student.type, "parameters": {**cfg.student.parameters, **channels}}
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg)
    if init is not None:
        transfer_weights(model, model_cfg, layout, init, where=f"{cfg.path}: student.init")
    model.to(dev)
    optimizer = make_optimizer(model, cfg)
    amp = amp_dtype_for(dev)
    steps_per_epoch = cfg.steps_per_epoch or max(1, len(train_ds) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    kl = LossSpec("kl", temperature=cfg.loss.temperature)
    ce = LossSpec("ce")
    cfg_dict = layout.cfg(model_cfg, cfg.to_dict())
    log = out / "metrics.jsonl"
    log.write_text("")
    print(f"distilling '{cfg.teacher}' ({len(classes)} classes) into a {cfg.student.type} student with "
          f"{count_parameters(model):,} parameters on {dev}: {len(train_ds)} training / {len(val_ds)} "
          f"validation frames, {steps_per_epoch} steps of {cfg.batch_size} per epoch")
    step, best, records = 0, None, []
    for epoch in range(cfg.epochs):
        s_torch, s_loader, _ = epoch_seeds(cfg.seed, epoch)
        torch.manual_seed(s_torch)
        model.train()
        sums, t0 = np.zeros(3), time.perf_counter()
        with step_bar(train_loader(train_ds, cfg, steps_per_epoch, s_loader, dev), steps_per_epoch,
                      f"epoch {epoch + 1}/{cfg.epochs}") as batches:
            for batch in batches:
                lr = lr_at(step, total, cfg.optimizer.lr, cfg.schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                ones = torch.ones(len(batch["frame"]), device=dev)
                with torch.autocast(dev.type, dtype=amp) if amp else nullcontext():
                    logits = model(student_input(batch[cfg.data.rgb].to(dev), layout))[:, layout.slice(SEMANTIC)]
                soft, _ = node_loss(kl, logits, batch[cfg.teacher].to(dev), ones)
                loss, hard = soft, torch.zeros(())
                if cfg.loss.hard_weight > 0:
                    hard, _ = node_loss(ce, logits, labels_of(batch, cfg, train_ds, cfg.labels, dev), ones)
                    loss = soft + cfg.loss.hard_weight * hard
                if not torch.isfinite(loss):
                    raise VreError(f"epoch {epoch + 1}, step {step}: the loss is {float(loss)}; lower optimizer.lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                sums += (loss.item(), soft.item(), hard.item())
                step += 1
        val = evaluate(model, eval_loader(val_ds, cfg, dev), cfg, val_ds, layout, dev)
        improved = val["agreement_miou"] is not None and (best is None or val["agreement_miou"] > best)
        best = val["agreement_miou"] if improved else best
        record = {"epoch": epoch + 1, "step": step, "lr": lr,
                  "train": dict(zip(("loss", "kl", "ce"), (sums / steps_per_epoch).tolist())),
                  "validation": val, "seconds": time.perf_counter() - t0}
        records.append(record)
        with log.open("a") as f:
            f.write(json.dumps(record) + "\n")
        ckpt = to_checkpoint(model, cfg_dict, layout.statistics, epoch=epoch + 1, global_step=step, best=best)
        save_checkpoint(ckpt, out / "last.ckpt")
        if improved:
            save_checkpoint(ckpt, out / "best.ckpt")
        draw(records, out)
        print(f"epoch {epoch + 1}/{cfg.epochs}  loss {record['train']['loss']:.4f}  agreement mIoU "
              f"{_pct(val['agreement_miou'])} pixel {_pct(val['agreement_pixel'])}"
              + (f"  student mIoU {_pct(val['student_miou'])} teacher {_pct(val['teacher_miou'])}"
                 if cfg.labels else "")
              + ("  (best)" if improved else ""))
    report = final_report(out / "best.ckpt", records, cfg, val_ds, layout, dev)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


@torch.no_grad()
def evaluate(model, batches, cfg: DistillConfig, dataset, layout: NodeLayout, dev) -> dict:
    """Student vs teacher top class (mIoU, pixel agreement); with labels, student and teacher vs them."""
    model.eval()
    classes = layout.node(SEMANTIC).classes
    agree, student, teacher = ClassMetrics(classes), ClassMetrics(classes), ClassMetrics(classes)
    for batch in batches:
        logits = model(student_input(batch[cfg.data.rgb].to(dev), layout))[:, layout.slice(SEMANTIC)]
        pred = logits.float().argmax(1)
        teacher_labels = labels_of(batch, cfg, dataset, cfg.teacher, dev)
        agree.update(batch["store"], pred, teacher_labels)
        if cfg.labels:
            truth = labels_of(batch, cfg, dataset, cfg.labels, dev)
            student.update(batch["store"], pred, truth)
            teacher.update(batch["store"], teacher_labels, truth)
    pooled = sum(agree.scenes.values())
    return {"agreement_miou": agree.summary()["miou"],
            "agreement_pixel": float(np.trace(pooled) / pooled.sum()) if np.sum(pooled) else None,
            "student_miou": student.summary()["miou"] if cfg.labels else None,
            "teacher_miou": teacher.summary()["miou"] if cfg.labels else None}


def frames_per_second(model, layout: NodeLayout, size: tuple[int, int], dev, repeats: int = 10) -> float:
    """Student forward passes per second on one frame of `size` (after 2 warm-up passes)."""
    x = torch.zeros(1, layout.total_channels, *size, device=dev)
    model.eval()
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return repeats / (time.perf_counter() - t0)


def final_report(best_path: Path, records: list[dict], cfg: DistillConfig, val_ds, layout: NodeLayout, dev) -> dict:
    """Parameters, speed and validation agreement of the best checkpoint."""
    from video_pipeline.phgmae.model import model_from_checkpoint

    model, _ = model_from_checkpoint(read_checkpoint(best_path))
    model.to(dev)
    best = max(records, key=lambda r: r["validation"]["agreement_miou"] or -1)
    return {"checkpoint": str(best_path), "epoch": best["epoch"], "parameters": count_parameters(model),
            "frames_per_s": round(frames_per_second(model, layout, tuple(val_ds.size), dev), 2),
            "size": list(val_ds.size), "device": str(dev), "threads": torch.get_num_threads(),
            **best["validation"]}


def draw(records: list[dict], out: Path) -> None:
    from video_pipeline.phgmae.plots import plot_curves

    keys = ("agreement_miou", "agreement_pixel", "student_miou", "teacher_miou")
    series = {k.replace("_", " "): [(r["epoch"], r["validation"][k]) for r in records] for k in keys}
    plot_curves(out / "agreement.png", "student vs teacher (validation)", series)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"
