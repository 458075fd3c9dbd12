"""A small training store and config: what the training kill tests and the checkpoint security
tests train on (a tiny model learns it in a few steps)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from video_pipeline.store import ArraySpec, VideoStore

TRAIN_CONFIG = """\
output: {output}
seed: 0
epochs: 4
batch_size: 4
steps_per_epoch: 4
data:
  train: {{stores: [{store}]}}
  validation: {{stores: [{store}]}}
  inputs: [rgb, depth]
  outputs: [semantic_output]
  modalities: {{semantic_output: semantic}}
  crop: [24, 32]
  num_workers: 0
model:
  parameters: {{num_filters: 6}}
masking:
  probability: 0.5
  always_visible: [rgb]
optimizer: {{lr: 0.01}}
schedule: {{type: cosine, warmup_steps: 2}}
monitor: loss
"""


def training_store(path: Path, n: int = 8, size=(32, 48)) -> Path:
    """rgb, depth and a 3-class map of random boxes: something a tiny model learns in a few steps."""
    rng = np.random.default_rng(0)
    h, w = size
    sem = np.zeros((n, h, w, 1), np.uint8)
    for t in range(n):
        for _ in range(4):
            y, x, r = int(rng.integers(0, h)), int(rng.integers(0, w)), int(rng.integers(4, 10))
            sem[t, max(0, y - r):y + r, max(0, x - r):x + r] = rng.integers(1, 3)
    colours = np.array([[60, 140, 50], [40, 60, 160], [150, 150, 150]], np.float32)
    rgb = np.clip(colours[sem[..., 0]] + rng.normal(0, 10, (n, h, w, 3)), 0, 255).astype(np.uint8)
    depth = (sem / 2 + 0.1 * rng.random((n, h, w, 1))).astype(np.float16)
    store = VideoStore.open(path, "w")
    store.init_meta({"experts": {}}, "test", {"path": "synthetic", "n_frames": n, "fps": 1.0, "height": h,
                                              "width": w}, "test", 4, (h, w))
    for name, data, attrs in (("rgb", rgb, {"kind": "image"}), ("depth", depth, {"kind": "depth"}),
                              ("semantic", sem, {"kind": "semantic", "classes": ["land", "water", "road"],
                                                 "palette": [[0, 255, 0], [0, 0, 255], [255, 255, 255]]})):
        c = data.shape[-1]
        store.write_array(ArraySpec(name, c, str(data.dtype), {**attrs, "channels": c}), data)
    return path
