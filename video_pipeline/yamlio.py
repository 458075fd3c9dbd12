"""Safe YAML loading that remembers line numbers, for `FILE:LINE: what is wrong` errors.

Shared by recipes (`recipe.py`) and training configs (`phgmae/config.py`).
"""
from __future__ import annotations

import re
import reprlib
import sys
from pathlib import Path

import yaml

from video_pipeline.errors import RecipeError


MAX_VALUES = 1_000_000  # values a YAML file may expand to, aliases counted each time they are used

_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxlist, _EXCERPT.maxtuple, _EXCERPT.maxdict = 3, 6, 6, 6
_EXCERPT.maxstring, _EXCERPT.maxother, _EXCERPT.maxlong = 60, 60, 40


def excerpt(value) -> str:
    """A bounded repr of `value` for an error message (at most a few hundred characters whatever
    the value: nested lists and long strings are cut with '...'). Never expands a YAML alias bomb."""
    return _EXCERPT.repr(value)


def expanded_size(value, memo: dict | None = None) -> int:
    """How many values `value` holds when written out in full, each shared (aliased) object counted
    every time it is used; computed once per distinct object, so a bomb costs no time."""
    memo = {} if memo is None else memo
    if not isinstance(value, (dict, list, tuple)):
        return 1
    key = id(value)
    if key not in memo:
        memo[key] = 0  # a cycle (a YAML alias to itself) counts once
        items = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
        memo[key] = 1 + sum(expanded_size(v, memo) for v in items)
    return memo[key]


class LineDict(dict):
    """A dict from YAML that knows the line of itself (`line`) and of each key (`lines[key]`)."""

    line: int = 0
    lines: dict

    def line_of(self, key) -> int:
        return self.lines.get(key, self.line)


class _Loader(yaml.SafeLoader):
    """SafeLoader (no arbitrary objects) whose mappings are LineDicts."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line, out.lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value",
                                                    key_node.start_mark) from None
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'",
                                                    key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path, what: str = "recipe") -> LineDict:
    """Parse a YAML file into LineDicts; any problem is a RecipeError `FILE:LINE: ...`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(f"{path}: {what} file not found") from None
    except OSError as err:
        raise RecipeError(f"{path}: cannot read the {what} ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise RecipeError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); "
                          f"save the {what} as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        problem = err.problem or err.context or "invalid YAML"
        raise RecipeError(f"{path}:{line}: invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as err:  # a control character: it has a position, not a mark
        line = text[:err.position].count("\n") + 1
        raise RecipeError(f"{path}:{line}: invalid YAML: control character #x{err.character:02x} is not "
                          f"allowed; save the {what} as plain text") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}:1: invalid YAML: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise RecipeError(f"{path}:1: invalid YAML: nested too deeply") from None
    except ValueError as err:  # a value YAML reads but Python cannot make: a date 2024-13-45, an integer
        # of more digits than Python converts (sys.get_int_max_str_digits)
        digits = max(re.finditer(r"\d+", text), key=lambda m: len(m[0]), default=None)
        if digits is None or len(digits[0]) <= sys.get_int_max_str_digits():
            raise RecipeError(f"{path}:1: invalid YAML: {str(err).splitlines()[0]}") from None
        line = text[:digits.start()].count("\n") + 1
        raise RecipeError(f"{path}:{line}: invalid YAML: a number of {len(digits[0])} digits is too "
                          f"long") from None
    if data is None:
        raise RecipeError(f"{path}:1: the {what} is empty")
    memo: dict = {}
    if isinstance(data, dict) and expanded_size(data, memo) > MAX_VALUES:
        line, node = 1, data
        while isinstance(node, LineDict):  # the line of the innermost key holding the expansion
            key = next((k for k, v in node.items() if expanded_size(v, memo) > MAX_VALUES // 100), None)
            if key is None:
                break
            line, node = node.line_of(key), node[key]
        raise RecipeError(f"{path}:{line}: the {what} expands to more than {MAX_VALUES:,} values through "
                          f"YAML aliases (*name); write the values out")
    if not isinstance(data, LineDict):
        raise RecipeError(f"{path}:1: the {what} must be a mapping of keys to values, "
                          f"got {type(data).__name__}")
    return data
