"""What a depth-like array holds: the vocabulary producers declare and consumers read.

A `kind="depth"` output names one quantity in `OutputSpec.quantity` (and its numeric range in
`value_range`); the store keeps both in the array's attrs (`quantity`, `value_range`), so every
reader (normals, thresholds, previews, export) knows what a number means and never guesses.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

METRIC_DEPTH = "metric_depth"
RELATIVE_DEPTH = "relative_depth"
INVERSE_DEPTH = "inverse_depth"
# name -> meaning (shown by `vre experts` and the docs)
QUANTITIES = {
    METRIC_DEPTH: "distance along the optical axis in metres; larger is farther",
    RELATIVE_DEPTH: "depth up to an unknown scale (and shift), e.g. per-frame [0, 1]; larger is farther",
    INVERSE_DEPTH: "relative inverse depth (disparity) up to an unknown scale (and shift); larger is nearer",
}


def check_quantity(quantity: str | None) -> str | None:
    """`quantity` if it is None or one of QUANTITIES, else ValueError listing them."""
    if quantity is not None and quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {', '.join(QUANTITIES)}, got {quantity!r}")
    return quantity


def quantity_of(attrs: Mapping) -> str | None:
    """The quantity recorded in an array's attrs (or an OutputSpec's `to_attrs()`); None if unknown."""
    return attrs.get("quantity")


def grows_with_distance(quantity: str) -> bool:
    """True for depths (larger is farther), False for inverse depth (larger is nearer)."""
    return quantity != INVERSE_DEPTH


def require_quantity(dep: str, quantity: str | None, consumer: str) -> str:
    """`quantity`, or ValueError in one line when the dependency `dep` declares none."""
    if quantity is None:
        raise ValueError(f"dependency '{dep}' does not say which depth quantity it holds, so {consumer} "
                         f"cannot read it: its expert must set OutputSpec(quantity=...) to one of "
                         f"{', '.join(QUANTITIES)}")
    return quantity


def as_depth(values: np.ndarray, quantity: str) -> np.ndarray:
    """float32 values growing with distance: depths as they are, inverse depth inverted.

    values: any shape. Inverse depth <= 0 (infinitely far) becomes +inf, which depth consumers
    treat as missing.
    """
    values = np.asarray(values, dtype=np.float32)
    if grows_with_distance(quantity):
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, 1.0 / values, np.inf).astype(np.float32)
