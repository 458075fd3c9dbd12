"""User-facing errors: each carries one line that names the file/key/frame and what to do."""
import re


class VreError(Exception):
    """An error the user can fix. The CLI prints `str(err)` as one line and exits non-zero.

    Raised in a DataLoader worker, torch re-raises it in the main process as the same class built
    from its report ("Caught X in DataLoader worker process N. Original Traceback ..."): the
    message is then the original one line again, the traceback being the worker's business."""

    exit_code = 2

    def __init__(self, *args):
        super().__init__(*((worker_message(args[0]), *args[1:]) if args else ()))


WORKER_REPORT = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback ")


def worker_message(message):
    """The original message of a VreError in torch's DataLoader worker report; anything else as
    it is."""
    if not isinstance(message, str) or not (match := WORKER_REPORT.match(message)):
        return message
    last = message.rstrip().splitlines()[-1]  # "module.Class: the message"
    head, sep, text = last.partition(": ")
    return text if sep and head.rsplit(".", 1)[-1] == match.group(1) else message


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
