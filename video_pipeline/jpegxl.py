"""The JPEG-XL lossless zarr v3 codec of `codec: jpegxl` arrays (see codecs.py for the names a
recipe may give). Importing this module registers it with zarr; plain zarr readers find it through
this package's `zarr.codecs` entry point. Encoding and decoding need `imagecodecs`.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import parse_named_configuration

JPEGXL_NAME = "video_pipeline.jpegxl"  # the codec's name in zarr.json and in the entry point


@dataclass(frozen=True)
class JpegXlCodec(ArrayBytesCodec):
    """zarr v3 array -> bytes codec: each chunk [1.., H, W, C] uint8 (C in 1, 3, 4) as one lossless
    JPEG-XL image (`imagecodecs`). Registered with zarr as `video_pipeline.jpegxl`."""

    is_fixed_size = False
    effort: int = 1

    def __init__(self, *, effort: int = 1) -> None:
        object.__setattr__(self, "effort", int(effort))

    @classmethod
    def from_dict(cls, data):
        _, conf = parse_named_configuration(data, JPEGXL_NAME, require_configuration=False)
        return cls(**(conf or {}))

    def to_dict(self):
        return {"name": JPEGXL_NAME, "configuration": {"effort": self.effort}}

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        if dtype.to_native_dtype() != np.dtype("uint8") or shape[-1] not in (1, 3, 4):
            raise ValueError(f"{JPEGXL_NAME} stores uint8 [.., H, W, C] with C in 1, 3, 4; "
                             f"got {dtype.to_native_dtype()} of shape {shape}")

    def compute_encoded_size(self, input_byte_length: int, chunk_spec) -> int:
        raise NotImplementedError  # variable size

    def encode_array(self, chunk: np.ndarray) -> bytes:
        """uint8 [1.., H, W, C] -> JPEG-XL bytes (one thread: the store's writers run in parallel)."""
        import imagecodecs

        image = chunk.reshape(chunk.shape[-3:])
        if image.shape[-1] == 1:
            image = image[..., 0]
        return imagecodecs.jpegxl_encode(np.ascontiguousarray(image), lossless=True, effort=self.effort,
                                         numthreads=1)

    def decode_array(self, data, shape: tuple[int, ...]) -> np.ndarray:
        """JPEG-XL bytes -> uint8 array of `shape`."""
        import imagecodecs

        return imagecodecs.jpegxl_decode(data, numthreads=1).reshape(shape)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec) -> Buffer:
        return chunk_spec.prototype.buffer.from_bytes(self.encode_array(chunk_array.as_numpy_array()))

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec) -> NDBuffer:
        image = self.decode_array(chunk_bytes.as_numpy_array(), chunk_spec.shape)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(image)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec) -> Buffer:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)


def register() -> None:
    """Make zarr know the JPEG-XL codec (its entry point does the same for plain zarr readers)."""
    from zarr.registry import register_codec

    register_codec(JPEGXL_NAME, JpegXlCodec)


register()
