"""Pure array operations shared by the runner, the dataset and previews."""
from __future__ import annotations

import numpy as np

NEAREST_KINDS = ("semantic", "binary")


def resize(arr: np.ndarray, size: tuple[int, int], kind: str = "image") -> np.ndarray:
    """Resize [N,h,w,C] (any dtype) to [N,H,W,C] with H, W = `size`.

    Label kinds (semantic, binary) use nearest neighbour so no new class appears; images shrink with
    area averaging; everything else is bilinear. Flow vectors are scaled with the image so they stay
    in pixels of the new size (channel 0 = dx with the width, channel 1 = dy with the height).
    """
    n, h, w, c = arr.shape
    H, W = size
    if (h, w) == (H, W):
        return arr
    import cv2  # here, not at the top: importing this module stays cheap (`vre run`'s start-up)

    if kind in NEAREST_KINDS:
        interp = cv2.INTER_NEAREST
    elif kind == "image" and H <= h and W <= w:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    work = arr.astype(np.float32) if arr.dtype == np.float16 else arr
    out = np.empty((n, H, W, c), dtype=work.dtype)
    for i in range(n):
        r = cv2.resize(work[i], (W, H), interpolation=interp)
        out[i] = r.reshape(H, W, c)
    if kind == "flow":
        out[..., 0] *= W / w
        out[..., 1] *= H / h
    return out.astype(arr.dtype, copy=False)
