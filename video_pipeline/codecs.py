"""Store codecs: the names a recipe's `codec:` may give (the JPEG-XL zarr v3 codec itself is in
`jpegxl.py`: this module stays free of zarr, so reading a recipe does not import it).

    codec: auto                         the default, chosen per kind (`resolve`): Blosc zstd
                                        level 1 for label maps and masks (they compress 5-10x,
                                        2x better than with lz4), Blosc lz4 for everything else:
                                        camera pixels and float maps, where zstd saves 8-17% of
                                        the bytes for ~3x the CPU to write and ~3-5x to read;
                                        every zarr v3 reader
    codec: zstd                         Blosc zstd, level 1 (every zarr v3 reader)
    codec: {name: zstd, level: 5}       Blosc zstd at level 1..22
    codec: lz4                          Blosc lz4 (every zarr v3 reader): ~7x faster to write and
                                        ~10x to read than zstd, ~10% larger on camera pixels
    codec: jpegxl                       JPEG-XL lossless (uint8 modalities of 1, 3 or 4 channels):
    codec: {name: jpegxl, effort: 1}    ~1/3 of the raw size of camera pixels, slower to write and
                                        read; reading needs `imagecodecs` and this package installed
                                        (its `zarr.codecs` entry point registers the codec with zarr)

`store.array_codecs` turns a `CodecSpec` into the codec chain of an array.
"""
from __future__ import annotations

from dataclasses import dataclass

from video_pipeline.yamlio import excerpt

NAMES = ("auto", "zstd", "lz4", "jpegxl")
LEVELS = {"zstd": (1, 22), "lz4": (1, 9)}
EFFORTS = (1, 9)


@dataclass(frozen=True)
class CodecSpec:
    """How one modality array is compressed: `name` in NAMES; `level` for zstd/lz4 (Blosc clevel),
    `effort` for jpegxl (1 fastest .. 9 smallest); "auto" resolves per kind (`resolve`)."""

    name: str = "auto"
    level: int = 1
    effort: int = 1

    def to_dict(self) -> dict:
        """The recipe form, as recorded in the store: {name}, {name, level} or {name, effort}."""
        if self.name == "auto":
            return {"name": self.name}
        if self.name == "jpegxl":
            return {"name": self.name, "effort": self.effort}
        return {"name": self.name, "level": self.level}


DEFAULT = CodecSpec()  # "auto"
# The default before "auto" existed: stores made then hold it wherever the recipe named no codec,
# so a recipe identity treats it like the default (an array keeps the codec it was created with).
ZSTD1 = CodecSpec("zstd", level=1)
FAST_CODEC = CodecSpec("lz4", level=1)


def resolve(codec: CodecSpec | None, kind: str | None, dtype: str | None) -> CodecSpec:
    """The codec an array of `kind` and `dtype` is created with: `codec` itself unless it is "auto"
    (or None). "auto" is Blosc zstd level 1 for uint8 label maps and masks (kinds semantic and
    binary: 0.10-0.18 of raw, against 0.12-0.40 with lz4) and Blosc lz4 for the rest: camera
    pixels (zstd: 0.92 of raw against 0.99, for 6.6 vs 0.8 ms of CPU per 960x540 frame) and float
    maps (depth 0.53 vs 0.62, normals 0.71 vs 0.81), which training reads decode several times a
    second (zstd: ~12 ms of CPU per {rgb, depth, normals, semantic} sample, lz4 ~3 ms)."""
    if codec is not None and codec.name != "auto":
        return codec
    return ZSTD1 if kind in ("semantic", "binary") and dtype == "uint8" else FAST_CODEC


def parse_codec(value) -> CodecSpec:
    """A recipe's `codec:` value (a name, or a mapping {name, level | effort}) -> CodecSpec.

    Raises ValueError saying what is accepted.
    """
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError(f"must be one of {', '.join(NAMES)} or a mapping like {{name: zstd, level: 3}}, "
                         f"got {excerpt(value)}")
    name = value["name"]
    if name not in NAMES:
        raise ValueError(f"unknown codec '{name}' (known: {', '.join(NAMES)})")
    if name == "auto":
        if set(value) != {"name"}:
            raise ValueError(f"auto takes no options, not {', '.join(sorted(map(str, set(value) - {'name'})))}")
        return DEFAULT
    allowed = {"name", "effort"} if name == "jpegxl" else {"name", "level"}
    extra = sorted(set(value) - allowed)
    if extra:
        raise ValueError(f"{name} takes {', '.join(sorted(allowed - {'name'}))}, not {', '.join(map(str, extra))}")
    if name == "jpegxl":
        effort = value.get("effort", 1)
        if not _int_in(effort, *EFFORTS):
            raise ValueError(f"jpegxl effort must be an integer in {EFFORTS[0]}..{EFFORTS[1]}, got {excerpt(effort)}")
        try:
            import imagecodecs  # noqa: F401
        except ImportError:
            raise ValueError("jpegxl needs the imagecodecs package (pip install imagecodecs), "
                             "or choose zstd or lz4") from None
        return CodecSpec(name, effort=effort)
    level = value.get("level", 1)
    lo, hi = LEVELS[name]
    if not _int_in(level, lo, hi):
        raise ValueError(f"{name} level must be an integer in {lo}..{hi}, got {excerpt(level)}")
    return CodecSpec(name, level=level)


def check_codec(codec: CodecSpec, dtype: str, channels: int) -> None:
    """ValueError if `codec` cannot store arrays of `dtype` with `channels` channels."""
    if codec.name == "jpegxl" and (dtype != "uint8" or channels not in (1, 3, 4)):
        raise ValueError(f"jpegxl stores uint8 images of 1, 3 or 4 channels; this expert writes "
                         f"{channels} channel(s) of {dtype} (use zstd or lz4)")


def codec_fits(codec: CodecSpec, dtype: str, channels: int) -> bool:
    """Whether `codec` can store arrays of `dtype` with `channels` channels."""
    try:
        check_codec(codec, dtype, channels)
    except ValueError:
        return False
    return True


def _int_in(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def __getattr__(name: str):
    """`codecs.JpegXlCodec`, where installs made before the codec moved to jpegxl.py name it (their
    `zarr.codecs` entry point): imported on use, so this module itself stays free of zarr."""
    if name == "JpegXlCodec":
        from video_pipeline.jpegxl import JpegXlCodec

        return JpegXlCodec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
