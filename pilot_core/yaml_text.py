"""YAML parsing that remembers where each value came from, so that a
validation error can name the file and line a user has to fix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError


class SourceError(ValueError):
    """A problem in a YAML document, located by file and line."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class YamlDocument:
    source: str
    data: Any
    root: yaml.Node | None

    def line_of(self, loc: Sequence[int | str]) -> int | None:
        """1-based line of the node at ``loc`` (or its deepest existing parent)."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for key in loc:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if key_node.value == key:
                        child = value_node
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                child = node.value[key]
            if child is None:
                break
            node = child
            line = node.start_mark.line + 1
        return line

    def errors(self, exc: ValidationError) -> list[SourceError]:
        """One located error per pydantic error."""
        found = []
        for error in exc.errors(include_url=False):
            loc = [part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
            path = ".".join(str(p) for p in loc) or "(document)"
            found.append(SourceError(self.source, self.line_of(loc), f"{path}: {error['msg']}"))
        return found


def parse_yaml(text: str, source: str) -> YamlDocument:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise SourceError(source, mark.line + 1 if mark else None, f"not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise SourceError(source, None, f"not valid YAML: {exc}") from None
    return YamlDocument(source, data, root)
