"""YAML reading that remembers where every value came from, and pydantic errors turned into problems
that name the file, the line, the field path and what was expected."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from placement.errors import InputError, Problem

PathKey = tuple[str | int, ...]


@dataclass
class SourceFile:
    """A parsed YAML document plus the line of each value, keyed by its path inside the document."""

    path: Path
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.path)

    def line_of(self, loc: Iterable[str | int]) -> int | None:
        key: PathKey = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), None)

    def problem(self, loc: Iterable[str | int], message: str) -> Problem:
        loc = tuple(loc)
        return Problem(self.name, self.line_of(loc), format_loc(loc), message)


def format_loc(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _construct(
    node: yaml.Node, path: PathKey, lines: dict[PathKey, int], source: str, loader: yaml.SafeLoader
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, (*path, "<key>"), {}, source, loader)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise InputError([Problem(source, key_node.start_mark.line + 1, format_loc(path),
                                          "mapping keys must be plain strings")])
            key = str(key) if not isinstance(key, str) else key
            if key in result:
                raise InputError([Problem(source, key_node.start_mark.line + 1, format_loc((*path, key)),
                                          f"key {key!r} appears twice")])
            result[key] = _construct(value_node, (*path, key), lines, source, loader)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), lines, source, loader) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    return loader.construct_object(node, deep=True)


def parse_yaml(path: Path, text: str | None = None) -> SourceFile:
    """Parse one YAML file. Syntax errors become an InputError naming the file and line."""
    name = str(path)
    try:
        if text is None:
            text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError([Problem(name, None, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError([Problem(name, None, "", f"cannot read file: {exc}")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise InputError([Problem(name, line, "", f"invalid YAML: {exc.problem or exc.context}")]) from None
    except yaml.YAMLError as exc:
        raise InputError([Problem(name, None, "", f"invalid YAML: {exc}")]) from None
    lines: dict[PathKey, int] = {}
    loader = yaml.SafeLoader("")
    try:
        data = None if node is None else _construct(node, (), lines, name, loader)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise InputError([Problem(name, mark.line + 1 if mark else None, "", f"invalid YAML value: {exc.problem}")]) from None
    return SourceFile(path, data, lines)


def _describe_input(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validation_problems(exc: ValidationError, source: SourceFile, prefix: PathKey = ()) -> list[Problem]:
    """One problem per pydantic error, located in the source file."""
    return error_problems(list(exc.errors(include_url=False)), source, prefix)


def error_problems(errors: list[Any], source: SourceFile, prefix: PathKey = ()) -> list[Problem]:
    problems = []
    for err in errors:
        loc: PathKey = (*prefix, *(p for p in err["loc"] if not _is_union_tag(p)))
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see `placement schema`)"
        elif "input" in err and err["type"] not in ("value_error", "assertion_error"):
            message = f"{message} (got {_describe_input(err['input'])})"
        problems.append(source.problem(loc, message))
    return problems


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the union member's type name in the location ("int", "function-after[...]").
    return isinstance(part, str) and (part in ("int", "float", "str", "bool", "none") or "[" in part)
