"""PHG-MAE networks: the SafeUAV/Map2Map U-Net family and a U-Net over a timm encoder.

Every model maps the concatenation of all nodes (modalities) to a prediction of every node:
`forward(x: float32 [B, C_in, H, W]) -> [B, C_out, H, W]`, for any H, W >= 1.

Checkpoints are plain dicts, the format of the released PHG-MAE-Distil checkpoints:
    {"state_dict": {...},
     "hyper_parameters": {"cfg": {"model": {"type": "safeuav" | "timm_unet", "parameters": {...},
                                            "hparams": {"data_shape": {node: [C, H, W], ...}}},
                                  "data": {"parameters": {"task_names": [node, ...]}}, ...},
                          "statistics": {node: [min, max, mean, std], ...}}}
The channel layout (which channels belong to which node) is the node order of
`cfg.data.parameters.task_names` with the channel counts of `cfg.model.hparams.data_shape`; input and
output share it. `statistics[node]` holds four per-channel lists (min, max, mean, std) in the node's raw
units (rgb: 0..255); inputs are standardized `(x - mean) / std` and a masked node is all zeros.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# SafeUAV sizes by the width of the first stage; parameter counts hold for 11 channels in and out.
SAFEUAV_NUM_FILTERS = {"150k": 6, "430k": 10, "1M": 16, "4M": 32}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BatchNorm running stats are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class _ConvBlock(nn.Sequential):
    """3x3 (transposed) convolution -> BatchNorm -> ReLU; children 0 and 1 hold the weights."""

    def __init__(self, d_in: int, d_out: int, *, stride: int = 1, dilation: int = 1,
                 transposed: bool = False):
        conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
        super().__init__(conv_cls(d_in, d_out, kernel_size=3, stride=stride, padding=dilation,
                                  dilation=dilation),
                         nn.BatchNorm2d(d_out), nn.ReLU(inplace=True))


def _join(up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Concatenate [up, skip] on channels after zero-padding `up` at its bottom/right to skip's H, W.

    A stride-2 transposed 3x3 convolution turns n rows into 2n-1, one short of (or equal to) the skip
    connection's rows; the released checkpoints were trained with exactly this padding.
    """
    dh, dw = skip.shape[-2] - up.shape[-2], skip.shape[-1] - up.shape[-1]
    return torch.cat([F.pad(up, (0, dw, 0, dh)), skip], dim=1)


class _Map2MapEncoder(nn.Module):
    """The Map2Map U-Net body: 3 stride-2 stages, 6 summed dilated convolutions, 3 upsampling stages.

    `[B, d_in, H, W] -> [B, nf, H, W]`; attribute names match the released checkpoints' keys.
    """

    def __init__(self, d_in: int, nf: int):
        super().__init__()
        self.d_in, self.n_filters = d_in, nf
        self.conv1, self.conv2 = _ConvBlock(d_in, nf), _ConvBlock(nf, nf)
        self.conv3 = _ConvBlock(nf, nf, stride=2)
        self.conv4, self.conv5 = _ConvBlock(nf, 2 * nf), _ConvBlock(2 * nf, 2 * nf)
        self.conv6 = _ConvBlock(2 * nf, 2 * nf, stride=2)
        self.conv7, self.conv8 = _ConvBlock(2 * nf, 4 * nf), _ConvBlock(4 * nf, 4 * nf)
        self.conv9 = _ConvBlock(4 * nf, 4 * nf, stride=2)
        # Dilations 1..32 at 1/8 resolution: the receptive field covers a 540x960 frame.
        self.dilate1 = _ConvBlock(4 * nf, 8 * nf)
        for i, d in enumerate((2, 4, 8, 16, 32), start=2):
            setattr(self, f"dilate{i}", _ConvBlock(8 * nf, 8 * nf, dilation=d))
        self.conv10_t = _ConvBlock(8 * nf, 4 * nf, stride=2, transposed=True)
        self.conv11 = _ConvBlock(8 * nf, 4 * nf)
        self.conv12_t = _ConvBlock(4 * nf, 2 * nf, stride=2, transposed=True)
        self.conv13 = _ConvBlock(4 * nf, nf)
        self.conv14_t = _ConvBlock(nf, nf, stride=2, transposed=True)
        self.conv15 = _ConvBlock(2 * nf, nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.conv1(x)                                   # [B, nf, H, W]
        y4 = self.conv4(self.conv3(self.conv2(y1)))          # [B, 2nf, H/2, W/2]
        y7 = self.conv7(self.conv6(self.conv5(y4)))          # [B, 4nf, H/4, W/4]
        d = self.dilate1(self.conv9(self.conv8(y7)))         # [B, 8nf, H/8, W/8]
        total = d
        for i in range(2, 7):
            d = getattr(self, f"dilate{i}")(d)
            total = total + d
        y11 = self.conv11(_join(self.conv10_t(total), y7))   # [B, 4nf, H/4, W/4]
        y13 = self.conv13(_join(self.conv12_t(y11), y4))     # [B, nf, H/2, W/2]
        return self.conv15(_join(self.conv14_t(y13), y1))    # [B, nf, H, W]


class SafeUAV(nn.Module):
    """SafeUAV/Map2Map U-Net: `[B, in_channels, H, W] -> [B, out_channels, H, W]`, any H, W.

    num_filters 6/10/16/32 give about 150k/430k/1M/4M parameters (see SAFEUAV_NUM_FILTERS).
    """

    def __init__(self, in_channels: int, out_channels: int, num_filters: int):
        super().__init__()
        self.encoder = _Map2MapEncoder(in_channels, num_filters)
        self.decoder = nn.Conv2d(num_filters, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class _UpBlock(nn.Module):
    """Upsample to the skip's size, concatenate, two 3x3 conv-BN-ReLU: -> [B, d_out, h_skip, w_skip]."""

    def __init__(self, d_in: int, d_skip: int, d_out: int):
        super().__init__()
        self.convs = nn.Sequential(_ConvBlock(d_in + d_skip, d_out), _ConvBlock(d_out, d_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.convs(x if skip is None else torch.cat([x, skip], dim=1))


class TimmUNet(nn.Module):
    """U-Net over a timm feature encoder: `[B, in_channels, H, W] -> [B, out_channels, H, W]`.

    The encoder is `timm.create_model(encoder, features_only=True, in_chans=in_channels)`; its feature
    maps (strides e.g. 2, 4, 8, 16, 32) are merged deepest-first by `_UpBlock`s with `decoder_channels`
    (one entry per encoder stage, deepest first; None: each block keeps the width of the skip it
    merges, the last one half the shallowest width), and the last block brings the result to full
    resolution before a 1x1 head. The input is zero-padded at the bottom/right to a multiple of the encoder's
    total stride and the output cropped back, so any H, W works.
    `encoder_weights`: optional local timm checkpoint file for the encoder (no download ever happens).
    """

    def __init__(self, in_channels: int, out_channels: int, encoder: str = "resnet18",
                 decoder_channels: Sequence[int] | None = None,
                 encoder_weights: str | None = None):
        super().__init__()
        import timm

        kwargs: dict[str, Any] = {"features_only": True, "in_chans": in_channels}
        if encoder_weights:
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(encoder_weights)})
        self.encoder = timm.create_model(encoder, **kwargs)
        skips = list(self.encoder.feature_info.channels())            # shallow -> deep
        self.reduction = max(self.encoder.feature_info.reduction())
        if decoder_channels is None:
            decoder_channels = skips[-2::-1] + [max(skips[0] // 2, 8)]
        if len(decoder_channels) != len(skips):
            raise ValueError(f"decoder_channels needs {len(skips)} entries for encoder {encoder!r} "
                             f"(one per stage), got {list(decoder_channels)}")
        blocks, d_in = [], skips[-1]
        for d_skip, d_out in zip(skips[-2::-1] + [0], decoder_channels):
            blocks.append(_UpBlock(d_in, d_skip, d_out))
            d_in = d_out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(d_in, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        r = self.reduction
        x = F.pad(x, (0, -w % r, 0, -h % r))
        feats = self.encoder(x)                                       # shallow -> deep
        y = feats[-1]
        for block, skip in zip(self.blocks, feats[-2::-1] + [None]):
            size = tuple(x.shape[-2:]) if skip is None else tuple(skip.shape[-2:])
            y = block(y, skip, size)
        return self.head(y)[..., :h, :w]


_MODEL_TYPES = {"safeuav": SafeUAV, "timm_unet": TimmUNet}


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """A fresh model from a model config `{"type": "safeuav"|"timm_unet", "parameters": {...}}`.

    safeuav parameters: in_channels, out_channels, num_filters.
    timm_unet parameters: in_channels, out_channels, encoder, decoder_channels, encoder_weights.
    """
    kind = cfg.get("type")
    if kind not in _MODEL_TYPES:
        raise ValueError(f"model type must be one of {sorted(_MODEL_TYPES)}, got {kind!r}")
    return _MODEL_TYPES[kind](**dict(cfg.get("parameters", {})))


@dataclass(frozen=True)
class ModelMeta:
    """What a checkpoint says about its model's channels.

    nodes: node names in channel order (input and output share it).
    channels: node -> number of channels.
    statistics: node -> [min, max, mean, std], each a per-channel list in raw units.
    train_size: (H, W) the model was trained at, or None when the checkpoint does not say.
    """

    nodes: tuple[str, ...]
    channels: Mapping[str, int]
    statistics: Mapping[str, Sequence[Sequence[float]]] = field(default_factory=dict)
    train_size: tuple[int, int] | None = None

    def slice(self, node: str) -> slice:
        """The channel slice of `node` in the model's input/output."""
        start = 0
        for name in self.nodes:
            if name == node:
                return slice(start, start + self.channels[name])
            start += self.channels[name]
        raise KeyError(f"node {node!r} is not one of the checkpoint's nodes {list(self.nodes)}")

    @property
    def total_channels(self) -> int:
        return sum(self.channels[n] for n in self.nodes)


def meta_from_cfg(cfg: Mapping[str, Any], statistics: Mapping[str, Any] | None = None) -> ModelMeta:
    """The channel layout described by a training cfg (see the module docstring)."""
    try:
        data_shape = cfg["model"]["hparams"]["data_shape"]
    except (KeyError, TypeError):
        raise ValueError("cfg has no model.hparams.data_shape (node -> [C, H, W])") from None
    nodes = list(cfg.get("data", {}).get("parameters", {}).get("task_names") or data_shape)
    if sorted(nodes) != sorted(data_shape):
        raise ValueError(f"cfg task_names {nodes} and data_shape nodes {list(data_shape)} differ")
    channels = {n: int(data_shape[n][0]) for n in nodes}
    shapes = {tuple(int(v) for v in data_shape[n][1:3]) for n in nodes}
    train_size = shapes.pop() if len(shapes) == 1 and len(next(iter(shapes))) == 2 else None
    return ModelMeta(tuple(nodes), channels, dict(statistics or {}), train_size)


def model_from_checkpoint(ckpt: Mapping[str, Any]) -> tuple[nn.Module, ModelMeta]:
    """The model of a checkpoint dict, weights loaded strictly, in eval mode, plus its `ModelMeta`.

    Raises ValueError (one line) if the checkpoint lacks the fields or its weights do not fit.
    """
    try:
        hparams, state_dict = ckpt["hyper_parameters"], ckpt["state_dict"]
        cfg = hparams["cfg"]
        model_cfg = cfg["model"]
    except (KeyError, TypeError):
        raise ValueError("not a PHG-MAE checkpoint: expected keys state_dict and "
                         "hyper_parameters.cfg.model") from None
    meta = meta_from_cfg(cfg, hparams.get("statistics"))
    params = model_cfg.get("parameters", {})
    for key in ("in_channels", "out_channels"):
        if params.get(key) != meta.total_channels:
            raise ValueError(f"model {key}={params.get(key)} but the nodes {list(meta.nodes)} "
                             f"have {meta.total_channels} channels")
    model = build_model(model_cfg)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ValueError(f"checkpoint weights do not fit a {model_cfg.get('type')} model with "
                         f"{params}: {' '.join(s.strip() for s in first[:3])}") from None
    return model.eval(), meta


def to_checkpoint(model: nn.Module, cfg: Mapping[str, Any], statistics: Mapping[str, Any],
                  **extra: Any) -> dict:
    """A checkpoint dict in the released format; `model_from_checkpoint` reads it back.

    `cfg` is the training cfg (it must hold model.type/parameters/hparams.data_shape);
    `extra` adds top-level entries (epoch, optimizer state, ...).
    """
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"state_dict": state,
            "hyper_parameters": {"cfg": dict(cfg), "statistics": dict(statistics)}, **extra}
