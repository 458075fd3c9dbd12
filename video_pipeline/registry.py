"""The one registry of expert types: register, list, look up, discover plugins.

Discovery: built-ins and installed packages through the entry-point group `video_pipeline.experts`
(each entry point names a module whose import runs `@register_expert` decorators), and loose files
named by a recipe's `plugins:` list. Nothing else is imported or executed.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

from video_pipeline.errors import VreError
from video_pipeline.expert import Expert

ENTRY_POINT_GROUP = "video_pipeline.experts"

_experts: dict[str, type[Expert]] = {}
_origins: dict[str, str] = {}  # type name -> module (or file) that registered it
_entry_points_loaded = False


def register_expert(type_name: str):
    """Class decorator: register an `Expert` subclass under `type_name` ("family/name")."""
    if type_name.count("/") != 1 or not all(type_name.split("/")):
        raise ValueError(f"expert type names look like 'family/name', got {type_name!r}")

    def decorator(cls: type[Expert]) -> type[Expert]:
        if not (isinstance(cls, type) and issubclass(cls, Expert)):
            raise TypeError(f"@register_expert({type_name!r}) must decorate an Expert subclass")
        origin = cls.__module__
        previous = _experts.get(type_name)
        if previous is not None and previous.__qualname__ != cls.__qualname__:
            raise ValueError(f"expert type {type_name!r} is registered twice: by "
                             f"{_origins[type_name]} and by {origin}")
        cls.type_name = type_name
        _experts[type_name] = cls
        _origins[type_name] = origin
        return cls

    return decorator


def load_entry_points() -> None:
    """Import every module of the `video_pipeline.experts` entry-point group (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except (Exception, SystemExit) as err:  # SystemExit: a plugin calling sys.exit on import  # a broken plugin must say which one, not crash with a traceback
            raise VreError(f"plugin entry point '{ep.name} = {ep.value}' failed to import: "
                           f"{type(err).__name__}: {err} (reinstall or uninstall that package)") from err


def load_plugin_file(path: str | Path) -> None:
    """Import a loose Python file that registers experts (a recipe's `plugins:` entry)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise VreError(f"plugin file not found: {path} (fix the path in the recipe's plugins: list)")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"vre_plugin_{path.stem}_{digest}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:  # SystemExit: a plugin calling sys.exit on import
        del sys.modules[module_name]
        raise VreError(f"plugin {path} failed to import: {type(err).__name__}: {err}") from err


def list_experts() -> list[str]:
    """Every registered type name, sorted."""
    load_entry_points()
    return sorted(_experts)


def get_expert(type_name: str) -> type[Expert]:
    """The class registered as `type_name`; `KeyError` with a suggestion if there is none."""
    load_entry_points()
    try:
        return _experts[type_name]
    except KeyError:
        close = difflib.get_close_matches(type_name, _experts, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else " (run `vre experts` to list them)"
        raise KeyError(f"unknown expert type '{type_name}'{hint}") from None


def origin(type_name: str) -> str:
    """Module or file that registered `type_name`."""
    return _origins[type_name]
