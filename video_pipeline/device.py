"""The project's one device resolver: what "auto" (or no choice) means for torch work."""
from __future__ import annotations


def resolve_device(requested: str | None) -> str:
    """'auto' or None -> "cuda" if present, else "mps" if present, else "cpu"; other names pass
    through unchanged (checking them is the caller's business: a worker may name a GPU it owns).
    torch is imported only for "auto", so a run without learned experts never loads it."""
    if requested not in (None, "auto"):
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
