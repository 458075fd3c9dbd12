"""Whole shards of a modality array encoded and decoded without zarr's generic write/read path.

store.py writes every array in one layout: chunk = 1 frame, shard = `shard_frames` frames spanning
the whole frame (zarr v3 `sharding_indexed`, index at the end). For a whole shard, zarr's generic
path allocates a fill-valued buffer per chunk, copies the frame into it, then joins the encoded
chunks into one more buffer, all behind asyncio hand-offs: on 540x960 frames that costs about as
much CPU as compressing them. Here each frame goes straight through the array's own codec objects
(the chain `store.array_codecs` built: Blosc or JPEG-XL, then the crc32c checksum), the index
follows the zarr v3 sharding spec (uint64 (offset, nbytes) pairs in chunk order, through the
array's index codecs), and the pieces are written through zarr's LocalStore atomic write (a
temporary file renamed into place). `store.FrameReader` locates a frame's chunk with the index
(`store.read_shard_index`) and decodes it with `ShardIO.decode_chunk`. Plain zarr reads the result
like any other shard; arrays in another layout go through zarr.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from numcodecs import blosc
from zarr.abc.codec import ArrayArrayCodec
from zarr.codecs import BloscCodec, BytesCodec, ShardingCodec
from zarr.codecs.bytes import Endian
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.buffer.cpu import Buffer, NDBuffer
from zarr.core.dtype import UInt64
from zarr.storage import _local

EMPTY = 2 ** 64 - 1  # offset and size of a chunk never written (zarr sharding spec)


@dataclass(frozen=True)
class ShardIO:
    """How to encode and decode the chunks of one array [T, H, W, C], chunk [1, H, W, C]."""

    shard_frames: int
    frame_shape: tuple[int, ...]
    dtype: np.dtype
    codecs: tuple              # the inner chain: serializer (array -> bytes), then bytes -> bytes
    index_codecs: tuple
    chunk_spec: ArraySpec
    index_spec: ArraySpec

    @classmethod
    def of(cls, array: zarr.Array) -> "ShardIO | None":
        """The codecs of `array`, or None if it is not in store.py's layout."""
        meta = array.metadata
        try:
            (sharding,) = meta.codecs
            shard = tuple(meta.chunk_grid.chunk_shape)
            chunk = tuple(sharding.chunk_shape)
            ok = (isinstance(sharding, ShardingCodec) and len(array.shape) == 4
                  and chunk == (1, *array.shape[1:]) and shard[1:] == tuple(array.shape[1:])
                  and sharding.index_location.value == "end"
                  and meta.chunk_key_encoding.to_dict() == {"name": "default", "configuration": {"separator": "/"}}
                  and not any(isinstance(c, ArrayArrayCodec) for c in sharding.codecs)
                  and all(hasattr(c, "_encode_sync") and hasattr(c, "_decode_sync")
                          for c in (*sharding.codecs, *sharding.index_codecs)))
        except (AttributeError, TypeError, ValueError):
            return None
        if not ok:
            return None
        config = ArrayConfig(order="C", write_empty_chunks=True)
        prototype = default_buffer_prototype()
        chunk_spec = ArraySpec(shape=chunk, dtype=meta.data_type, fill_value=meta.fill_value,
                               config=config, prototype=prototype)
        index_spec = ArraySpec(shape=(shard[0], 1, 1, 1, 2), dtype=UInt64(endianness="little"),
                               fill_value=EMPTY, config=config, prototype=prototype)
        return cls(shard[0], chunk[1:], meta.data_type.to_native_dtype(), tuple(sharding.codecs),
                   tuple(sharding.index_codecs), chunk_spec, index_spec)

    # ------------------------------------------------------------------ encode
    def encode_chunk(self, frame: np.ndarray):
        """One frame [H, W, C] -> its encoded chunk (a buffer-protocol object)."""
        value = NDBuffer.from_numpy_array(frame[None])
        for codec in self.codecs:
            value = codec._encode_sync(value, self.chunk_spec)
        return value.as_numpy_array()

    def _encode_index(self, index: np.ndarray):
        value = NDBuffer.from_numpy_array(index.astype("<u8").reshape(self.index_spec.shape))
        for codec in self.index_codecs:
            value = codec._encode_sync(value, self.index_spec)
        return value.as_numpy_array()

    def write_shard(self, path: Path, frames: np.ndarray) -> None:
        """Encode a shard from all of its frames [K, H, W, C] (K = the shard's length, shorter for
        the last shard of a video) and write it as the file `path`."""
        chunks = [self.encode_chunk(f) for f in frames]
        index = np.full((self.shard_frames, 2), EMPTY, np.uint64)
        sizes = np.array([c.nbytes for c in chunks], np.uint64)
        index[:len(chunks), 1] = sizes
        index[:len(chunks), 0] = np.cumsum(sizes) - sizes
        path.parent.mkdir(parents=True, exist_ok=True)
        # zarr's own atomic write (a `*.partial` file renamed into place), looked up at call time
        with _local._atomic_write(path, "wb") as f:
            for piece in (*chunks, self._encode_index(index)):
                f.write(piece)

    # ------------------------------------------------------------------ decode
    def decode_into(self, raw, out: np.ndarray) -> None:
        """Encoded chunk bytes -> `out` [H, W, C] (C-contiguous, writable, the array's dtype).
        Blosc chunks (with or without their crc32c) are checked and decompressed straight into
        `out`; other chains decode through `decode_chunk`, then copy. Raises ValueError on a
        checksum mismatch or a chunk of the wrong size, or what the codecs raise."""
        serializer, *compressors = self.codecs
        names = [type(c).__name__ for c in compressors]
        if (names in (["BloscCodec"], ["BloscCodec", "Crc32cCodec"]) and isinstance(serializer, BytesCodec)
                and serializer.endian in (None, Endian(sys.byteorder)) and out.flags.c_contiguous):
            payload = np.frombuffer(raw, np.uint8)  # a view: the chunk is not copied again
            if len(names) == 2:
                payload, crc = payload[:-4], payload[-4:].tobytes()
                if len(crc) != 4 or google_crc32c.value(payload) != int.from_bytes(crc, "little"):
                    raise ValueError("Stored and computed checksum do not match")
            # the Blosc header: 16 bytes, uncompressed size at 4 and compressed size at 12 (uint32 LE)
            nbytes, cbytes = (int.from_bytes(payload[i:i + 4].tobytes(), "little") for i in (4, 12))
            if len(payload) < 16 or cbytes != len(payload) or nbytes != out.nbytes:
                raise ValueError(f"not a Blosc chunk of this frame ({len(payload)} bytes, header says "
                                 f"{cbytes} holding {nbytes}, a frame takes {out.nbytes})")
            blosc.decompress(payload, out)
            return
        out[...] = self.decode_chunk(bytes(raw))

    def decode_chunk(self, raw: bytes) -> np.ndarray:
        """Encoded chunk bytes -> one frame [H, W, C] of the array's dtype (a new, writable array).
        Raises what the codecs raise (a checksum mismatch, a chunk that does not decode)."""
        value = Buffer.from_bytes(raw)
        serializer, *compressors = self.codecs
        for i, codec in reversed(list(enumerate(compressors))):
            if i == 0 and isinstance(codec, BloscCodec) and isinstance(serializer, BytesCodec) \
                    and serializer.endian in (None, Endian(sys.byteorder)):
                out = np.empty(self.frame_shape, self.dtype)  # decompressed straight into it
                blosc.decompress(value.as_numpy_array(), out)
                return out
            value = codec._decode_sync(value, self.chunk_spec)
        frame = serializer._decode_sync(value, self.chunk_spec).as_numpy_array().reshape(self.frame_shape)
        return frame if frame.flags.writeable else frame.copy()
