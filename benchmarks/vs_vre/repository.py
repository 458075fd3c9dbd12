"""The three representation types the side-by-side benchmark asks video-representations-extractor
for, imported one by one: its default repository imports every model family, which fails on a
CPU-only torch. Passed to it as `--no_vre_repository --external_repositories repository.py:get_repository`."""


def get_repository() -> dict:
    from vre_repository.color.hsv import HSV
    from vre_repository.color.rgb import RGB
    from vre_repository.edges.canny import Canny

    return {"color/rgb": RGB, "color/hsv": HSV, "edges/canny": Canny}
