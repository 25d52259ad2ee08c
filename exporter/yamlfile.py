"""One strict YAML loader, shared by both config files.

The loader is PyYAML's ``SafeLoader`` (no Python objects) made strict: a mapping
key given twice is an error instead of "the last one wins", and a key must be a
plain scalar. Every error becomes one line with its line and column, so the
exporter can print it as ``error: <file>: <problem>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from exporter.messages import brief, escape_controls, key_shown

__all__ = ["UnreadableFileError", "YamlFileError", "load_yaml_file"]


class YamlFileError(Exception):
    """The file cannot be read or is not valid YAML; the message is one line."""


class UnreadableFileError(YamlFileError):
    """The file cannot be opened or read (it may not exist: the name may be a pasted secret)."""


def load_yaml_file(path: Path) -> Any:
    """Parse the YAML file at ``path`` strictly; None for an empty document.

    The message of :class:`YamlFileError` does not name the file: callers
    prefix it with what the file is (``config file x.yaml: ...``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        reason = escape_controls(err.strerror or type(err).__name__)
        raise UnreadableFileError(f"cannot read: {reason}") from None
    except UnicodeDecodeError:
        raise YamlFileError("not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise YamlFileError(f"not valid YAML: {_yaml_problem(err)}") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A one-line description of a YAML error, with line and column."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or "syntax error"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{escape_controls(problem)}{where}"


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate and non-scalar mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            )
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            name = key_shown(key)
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {brief(key) if name == key else name}",
                key_node.start_mark,
            )
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
