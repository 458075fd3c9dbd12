"""User-facing errors: each carries one line that names the file/key/frame and what to do."""


class VreError(Exception):
    """An error the user can fix. The CLI prints `str(err)` as one line and exits non-zero."""

    exit_code = 2


class RecipeError(VreError):
    """A recipe (or training config) is invalid. Message format: `FILE:LINE: what is wrong`."""


class VideoError(VreError):
    """The video (or image folder) is missing, unreadable or corrupt."""


class ExpertError(VreError):
    """An expert failed or returned an invalid output (names the expert and the frames)."""


class StoreError(VreError):
    """The output store cannot be created, written, or conflicts with the recipe."""


class WeightsError(VreError):
    """Weights could not be found, downloaded or verified."""


class DecodeError(VideoError):
    """Decoding stopped early: every frame before `frame` was processed and stored."""

    def __init__(self, message: str, frame: int):
        super().__init__(message)
        self.frame = frame


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the one line saying what was kept and how to go on (the CLI prints it, exit 130)."""
