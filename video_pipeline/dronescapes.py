"""Facts of the (extended) Dronescapes dataset the code relies on: its 8 semantic classes and palette.

Source: the SafeUAV/PHG-MAE semantic expert of video-representations-extractor, which released the
PHG-MAE checkpoints (its class order is the semantic node's channel order), and the dataset itself.
"""
from __future__ import annotations

DRONESCAPES_CLASSES = ("land", "forest", "residential", "road", "little-objects", "water", "sky", "hill")
DRONESCAPES_PALETTE = ((0, 255, 0), (0, 127, 0), (255, 255, 0), (255, 255, 255),
                       (255, 0, 0), (0, 0, 255), (0, 255, 255), (127, 127, 63))
