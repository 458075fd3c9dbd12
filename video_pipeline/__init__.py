"""video-pipeline: stream videos through a graph of pretrained experts into zarr stores.

Public API for plugin authors: `Expert`, `OutputSpec`, `register_expert`.
"""
from video_pipeline.errors import VreError
from video_pipeline.expert import Expert, OutputSpec
from video_pipeline.registry import register_expert

__version__ = "0.1.0"
__all__ = ["Expert", "OutputSpec", "VreError", "register_expert", "__version__"]
