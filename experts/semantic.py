"""Experts: semantic segmentation (`semantic/phgmae-distil`, `semantic/hf`).

Both write a uint8 class map [N, H, W, 1] (`output: labels`) or float16 class probabilities
[N, H, W, K] (`output: probabilities`) at the frames' H, W.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from experts.depth import load_hf, read_hf_config
from video_pipeline.dronescapes import DRONESCAPES_CLASSES, DRONESCAPES_PALETTE
from video_pipeline.errors import WeightsError
from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.learned import frames_to_tensor, inference, weights_file
from video_pipeline.registry import register_expert

OUTPUTS = ("labels", "probabilities")
# Mask-classification models (per-query class + mask logits) that semantic/hf runs from pixels alone.
_MASK_CLASSIFICATION_TYPES = ("mask2former", "maskformer")


def label_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct deterministic colours for classes 0..n-1 (n < 2**24): the PASCAL VOC colour map.

    Bits 0, 1, 2 of the class index become the top bit of R, G, B; bits 3, 4, 5 the next bit; and so
    on, so neighbouring ids get very different colours. Class 0 is black.
    """
    colours = []
    for i in range(n):
        rgb = [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((i >> (3 * bit + channel)) & 1) << (7 - bit)
        colours.append(tuple(rgb))
    return tuple(colours)


def class_output(scores, output: str, size: tuple[int, int], logits: bool = True) -> np.ndarray:
    """Per-class scores torch [N, K, h, w] -> numpy at `size` = (H, W).

    `output="labels"`: uint8 [N, H, W, 1] argmax. `output="probabilities"`: float16 [N, H, W, K]
    summing to 1: the softmax of `scores` if they are `logits`, else non-negative scores normalized.
    """
    import torch
    import torch.nn.functional as F

    scores = F.interpolate(scores.float(), size=size, mode="bilinear", align_corners=False)
    if output == "labels":
        return scores.argmax(1, keepdim=True).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if logits:
        probs = scores.softmax(1)
    else:
        scores = scores.clamp_min(0)
        probs = scores / scores.sum(1, keepdim=True).clamp_min(1e-6)
    return probs.half().permute(0, 2, 3, 1).cpu().numpy()


def _check_output(output: str) -> str:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    return output


def _semantic_spec(output: str, classes: Sequence[str], palette) -> OutputSpec:
    if output == "labels":
        return OutputSpec(channels=1, kind="semantic", dtype="uint8", classes=classes, palette=palette)
    return OutputSpec(channels=len(classes), kind="semantic", dtype="float16", classes=classes,
                      palette=palette, value_range=(0.0, 1.0))


@register_expert("semantic/phgmae-distil")
class PhgmaeDistil(Expert):
    """The 8 Dronescapes classes from a PHG-MAE-Distil checkpoint (RGB in, every other node masked).

    The checkpoint's `hyper_parameters` say which input/output channels belong to which node and hold
    the RGB statistics: frames are resized to `size`, standardized as `(rgb - mean) / std` on 0..255
    values (no min-max step: the stored mean/std are in 0..255 units), every other input node is masked
    (zero, or the values a checkpoint trained with `masking.fill: mean` records), and the
    `semantic_output` node's logits are resized back to the frames' H, W.
    Params:
      output: "labels" (uint8 class map) or "probabilities" (float16 softmax, 8 channels).
      size: [H, W] the network runs at; None: the size the checkpoint was trained at (540x960).
    """

    uses_torch = True
    default_weights = None
    batch_size = 8

    def __init__(self, output: Literal[OUTPUTS] = "labels", size: list[int] | None = None):
        self.output_kind = _check_output(output)
        if size is not None and (len(size) != 2 or min(size) < 8):
            raise ValueError(f"size must be [H, W] with both at least 8, got {size}")
        self.size = tuple(size) if size is not None else None
        self.model = self.meta = None

    def output(self, deps: Mapping[str, OutputSpec]) -> OutputSpec:
        return _semantic_spec(self.output_kind, DRONESCAPES_CLASSES, DRONESCAPES_PALETTE)

    def setup(self, device: str) -> None:
        import torch

        from video_pipeline.errors import VreError
        from video_pipeline.phgmae.inference import load

        self.device = device
        weights_file(self, "a PHG-MAE checkpoint file, e.g. phgmae_distil_safeuav_430k.ckpt")
        try:
            loaded = load(self.weights_path, device)
            model, meta = loaded.model, loaded.layout.meta
            rgb, semantic = meta.slice("rgb"), meta.slice("semantic_output")
            stats = meta.statistics["rgb"]
        except (VreError, ValueError, KeyError) as err:
            raise WeightsError(f"expert '{self.name}': {self.weights_path} is not a usable PHG-MAE "
                               f"checkpoint: {err}") from None
        if rgb.stop - rgb.start != 3 or semantic.stop - semantic.start != len(DRONESCAPES_CLASSES):
            raise WeightsError(f"expert '{self.name}': {self.weights_path} has {rgb.stop - rgb.start} rgb "
                               f"and {semantic.stop - semantic.start} semantic channels, expected 3 and 8")
        self.model, self.meta = model.to(device), meta
        self._rgb, self._semantic = rgb, semantic
        self._mean = torch.tensor(stats[2], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(stats[3], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        fill = loaded.layout.fill_vector                   # masked nodes' values (`masking.fill: mean`)
        self._fill = None if fill is None else fill.to(device).view(1, -1, 1, 1)

    def __call__(self, frames: np.ndarray, deps: Mapping[str, np.ndarray]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        n, h, w = frames.shape[:3]
        size = self.size or self.meta.train_size or (h, w)
        rgb = frames_to_tensor(frames, self.device).float()                          # [N, 3, H, W] 0..255
        if (h, w) != tuple(size):
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = torch.zeros(n, self.meta.total_channels, *size, device=self.device)     # masked nodes: 0
        if self._fill is not None:                                                   # or their fill
            x += self._fill
        x[:, self._rgb] = (rgb - self._mean) / self._std
        with inference(self.device, self.dtype):
            logits = self.model(x)[:, self._semantic]                                # [N, 8, h', w']
        return class_output(logits, self.output_kind, (h, w))

    def teardown(self) -> None:
        self.model = self.meta = None


@register_expert("semantic/hf")
class HFSemantic(Expert):
    """Semantic segmentation with a transformers model, classes from its `config.id2label`.

    Per-pixel models (SegFormer, BEiT, DPT, UperNet, MobileViT...) give class logits, upsampled to the
    frames' H, W. Mask-classification models (Mask2Former, MaskFormer; semantic or panoptic
    checkpoints) give per-query class and mask logits, combined into per-class scores
    `sum_q softmax(class)[q, k] * sigmoid(mask)[q]` (the standard semantic inference; the "no object"
    class dropped); padding added by the processor is cropped away before resizing.
    Palette: `label_palette` (the PASCAL VOC colour map) over the class ids.
    Params:
      output: "labels" (uint8 class map) or "probabilities" (float16, one channel per class; for
        mask-classification models the scores normalized to sum to 1).
    """

    uses_torch = True
    output_needs_weights = True
    default_weights = "nvidia/segformer-b0-finetuned-ade-512-512"
    batch_size = 4

    def __init__(self, output: Literal[OUTPUTS] = "labels"):
        self.output_kind = _check_output(output)
        self.processor = self.model = None

    def classes(self) -> tuple[str, ...]:
        """Class names by id from the weights' config.json (ids must be 0..K-1).

        Needs the resolved weights (`bind(..., weights_path=...)`): the classes are the model's.
        """
        if self.weights_path is None:
            raise WeightsError(f"expert '{self.name}': semantic/hf takes its classes from its weights, "
                               f"which must be resolved before its output is known")
        id2label = read_hf_config(self.weights_path, self.name).get("id2label") or {}
        ids = sorted(int(k) for k in id2label)
        if not ids or ids != list(range(len(ids))):
            raise WeightsError(f"expert '{self.name}': config.json of {self.weights_path} needs id2label "
                               f"with ids 0..K-1, got {ids[:5]}...")
        if self.output_kind == "labels" and len(ids) > 255:
            raise WeightsError(f"expert '{self.name}': {len(ids)} classes do not fit a uint8 class map "
                               f"(255 is the fill value); use output: probabilities")
        return tuple(str(id2label[str(i)]) for i in ids)  # JSON keys are strings

    def output(self, deps: Mapping[str, OutputSpec]) -> OutputSpec:
        classes = self.classes()
        return _semantic_spec(self.output_kind, classes, label_palette(len(classes)))

    def setup(self, device: str) -> None:
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES

        self.device = device
        model_type = read_hf_config(self.weights_path, self.name).get("model_type")
        self._universal = model_type in _MASK_CLASSIFICATION_TYPES
        if not self._universal and model_type not in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES:
            raise WeightsError(f"expert '{self.name}': model type '{model_type}' of {self.weights_path} is "
                               f"not a semantic segmentation model semantic/hf can run")
        auto = "AutoModelForUniversalSegmentation" if self._universal else "AutoModelForSemanticSegmentation"
        self.processor, self.model = load_hf(auto, self.weights_path, device, self.name)

    def __call__(self, frames: np.ndarray, deps: Mapping[str, np.ndarray]) -> np.ndarray:
        import torch

        h, w = frames.shape[1:3]
        inputs = self.processor(images=list(frames_to_tensor(frames, self.device)), return_tensors="pt",
                                device=self.device)
        pixels = inputs["pixel_values"].to(self.device)
        with inference(self.device, self.dtype):
            out = self.model(pixel_values=pixels)
        if not self._universal:
            return class_output(out.logits, self.output_kind, (h, w))
        class_probs = out.class_queries_logits.float().softmax(-1)[..., :-1]         # [N, Q, K]
        masks = out.masks_queries_logits.float().sigmoid()                            # [N, Q, h', w']
        scores = torch.einsum("nqk,nqhw->nkhw", class_probs, masks)                   # [N, K, h', w']
        if "pixel_mask" in inputs:  # frames share one size: crop the padding, found on the first
            valid = inputs["pixel_mask"][0].bool()                                   # [h'', w'']
            rows = round(valid.any(1).float().mean().item() * scores.shape[-2])
            cols = round(valid.any(0).float().mean().item() * scores.shape[-1])
            scores = scores[..., : max(rows, 1), : max(cols, 1)]
        return class_output(scores, self.output_kind, (h, w), logits=False)

    def teardown(self) -> None:
        self.processor = self.model = None
