"""One frame per .npz file, as the Dronescapes dataset and VRE write them.

Reading such a file, writing one deterministically, the zip facts that let an imported file be
rewritten byte for byte, and the file format of each kind of modality (dtype, axes, value scale).

A file written by `np.savez` / `np.savez_compressed` differs from another holding the same array
only in its one zip entry: the time stamp (np.savez stamps the local time), the compression method,
the permission bits and the system that wrote it. `ZipFacts` holds those four, so `npz_bytes`
rewrites an imported file exactly; a new file gets fixed facts, so identical arrays give identical
files and a rerun can tell an unchanged file.
"""
from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


@dataclass(frozen=True)
class ZipFacts:
    """What varies between .npz files holding the same array (see the module docstring)."""

    date_time: tuple[int, int, int, int, int, int] = ZIP_TIME
    compress: bool = True
    external_attr: int = 0o644 << 16
    create_system: int = 3  # 3: Unix, 0: Windows

    WIDTH = 9  # ints in `pack()`

    def pack(self) -> list[int]:
        """The facts as 9 ints (a row of the store's `_npz/<modality>` table)."""
        return [*self.date_time, int(self.compress), self.external_attr, self.create_system]

    @classmethod
    def unpack(cls, row) -> "ZipFacts | None":
        """Inverse of `pack`; None for a row of -1 (no facts recorded)."""
        row = [int(v) for v in row]
        if row[0] < 0:
            return None
        return cls(tuple(row[:6]), bool(row[6]), row[7], row[8])


NEW_FILE = ZipFacts()  # the facts of a file no import recorded: deflated, fixed time


def npz_bytes(arr: np.ndarray, facts: ZipFacts = NEW_FILE) -> bytes:
    """An .npz holding `arr` as `arr_0` (what np.load reads), built exactly as np.savez(_compressed)
    builds it, with the zip entry facts `facts`."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if facts.compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method, allowZip64=True) as zf:
        info = zipfile.ZipInfo("arr_0.npy", date_time=facts.date_time)
        info.compress_type = method
        info.external_attr = facts.external_attr
        info.create_system = facts.create_system
        with zf.open(info, "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def read_array(raw: bytes) -> np.ndarray:
    """The array of a frame file's bytes: `arr_0` of an .npz (or its only array), or an .npy.
    ValueError says why the bytes are not one."""
    if raw[:4] != b"PK\x03\x04" and raw[:6] != b"\x93NUMPY":
        raise ValueError("not an .npz or .npy file")
    data = np.load(io.BytesIO(raw), allow_pickle=False)
    if isinstance(data, np.ndarray):
        return data
    with data:
        keys = list(data.keys())
        if "arr_0" not in keys and len(keys) != 1:
            raise ValueError(f"holds {keys}, expected one array named arr_0")
        return data["arr_0" if "arr_0" in keys else keys[0]]


def zip_facts(raw: bytes, arr: np.ndarray) -> ZipFacts | None:
    """The facts that make `npz_bytes(arr, facts)` reproduce `raw` exactly, or None when no facts do
    (an .npy, another writer, extra entries)."""
    if raw[:4] != b"PK\x03\x04":
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile:
        return None
    if len(infos) != 1 or infos[0].compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return None
    info = infos[0]
    facts = ZipFacts(tuple(info.date_time), info.compress_type == zipfile.ZIP_DEFLATED, info.external_attr,
                     info.create_system)
    return facts if npz_bytes(arr, facts) == raw else None


# ------------------------------------------------------------------------------------ file formats
@dataclass(frozen=True)
class FileFormat:
    """How a stored frame [H,W,C] is written to its file: `dtype`, with or without the channel axis
    (`channel_axis` False only for one channel), values times `scale`."""

    dtype: str
    channel_axis: bool = True
    scale: float | None = None

    def to_attrs(self) -> dict:
        """The `file` entry of a modality's attrs and description."""
        out = {"dtype": self.dtype, "shape": ["H", "W", "C"] if self.channel_axis else ["H", "W"], "key": "arr_0"}
        if self.scale is not None:
            out["scale"] = self.scale
        return out

    @classmethod
    def from_attrs(cls, doc: Mapping) -> "FileFormat":
        """Inverse of `to_attrs`; ValueError for an entry it cannot use."""
        shape = list(doc.get("shape") or [])
        if shape not in (["H", "W"], ["H", "W", "C"]) or not isinstance(doc.get("dtype"), str):
            raise ValueError(f"file format {dict(doc)} needs dtype and shape [H, W] or [H, W, C]")
        np.dtype(doc["dtype"])  # TypeError/ValueError for an unknown one
        return cls(doc["dtype"], shape == ["H", "W", "C"], doc.get("scale"))

    def encode(self, frame: np.ndarray) -> np.ndarray:
        """A stored frame [H,W,C] -> the file's array."""
        out = frame if self.channel_axis else frame[..., 0]
        if self.scale is not None:
            out = out.astype(np.float64) * self.scale
        if self.dtype == "bool":
            return out != 0
        return out.astype(self.dtype, copy=False)


def file_format(attrs: Mapping, stored_dtype: str, channels: int) -> FileFormat:
    """The file format of a modality: the one an import recorded (`attrs["file"]`), else what the
    public Dronescapes files and VRE's readers hold for its kind.

    Class maps: uint8 [H,W] class ids. Binary maps: bool [H,W]. Edge maps: float32 [H,W,1] in [0, 1].
    HSV stored as uint8: float32 [H,W,3] in [0, 1]. Everything else: the stored dtype, [H,W,C].
    """
    if attrs.get("file"):
        return FileFormat.from_attrs(attrs["file"])
    kind, family = attrs.get("kind"), str(attrs.get("type") or "").split("/")[0]
    if family == "edges" and channels == 1:
        return FileFormat("float32", True, 1 / 255 if stored_dtype == "uint8" and kind != "binary" else None)
    if kind == "semantic" and channels == 1:
        return FileFormat("uint8", False)
    if kind == "binary" and channels == 1:
        return FileFormat("bool", False)
    if attrs.get("type") == "color/hsv" and stored_dtype == "uint8":
        return FileFormat("float32", True, 1 / 255)
    return FileFormat(stored_dtype, True)
