"""The recipes and training configs that ship inside the package (recipes/ -> video_pipeline.recipes).

`vre run quickstart VIDEO` names a bundled recipe; `vre train --example teacher` prints a bundled
training config. A path that exists always wins over a bundled name.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from video_pipeline.errors import VreError


def _folder(*parts: str) -> Path:
    return Path(str(resources.files("video_pipeline.recipes").joinpath(*parts)))


def recipe_names() -> list[str]:
    """Names of the bundled recipes (recipes/*.yaml without the suffix), sorted."""
    return sorted(p.stem for p in _folder().glob("*.yaml"))


def example_names() -> list[str]:
    """Names of the bundled training configs (recipes/train/*.yaml without the suffix), sorted."""
    return sorted(p.stem for p in _folder("train").glob("*.yaml"))


def bundled_recipe(name: str) -> Path:
    """Path of bundled recipe `name` ("quickstart" or "quickstart.yaml")."""
    path = _folder(f"{name.removesuffix('.yaml')}.yaml")
    if not path.is_file():
        raise VreError(f"no bundled recipe '{name}' (bundled: {', '.join(recipe_names())})")
    return path


def example_config(name: str) -> Path:
    """Path of bundled training config `name` ("teacher" or "teacher.yaml")."""
    path = _folder("train", f"{name.removesuffix('.yaml')}.yaml")
    if not path.is_file():
        raise VreError(f"no example config '{name}' (examples: {', '.join(example_names())})")
    return path


def recipe_path(arg: str) -> Path:
    """A recipe argument: an existing file, else the name of a bundled recipe, else the path as given
    (loading it then reports the missing file)."""
    path = Path(arg)
    if path.exists() or arg.removesuffix(".yaml") not in recipe_names():
        return path
    return bundled_recipe(arg)
