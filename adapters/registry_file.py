"""Adding a device to, and removing one from, the device registry file, keeping its comments.

An entry is appended as text at the list's indentation, and removed by cutting its lines; the
result is parsed again and must hold exactly the expected devices, or the file is written anew
from the parsed entries (its comments lost, which the caller is told).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pilot_core.profiles import ProfileCatalog
from pilot_core.registry import DeviceEntry, DeviceKey, parse_registry


def add_device(path: Path, entry: DeviceEntry, catalog: ProfileCatalog) -> bool:
    """Append ``entry``; False if the file had to be rewritten without its comments."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    entries = _entries(text, path, catalog)
    expected = [*entries, entry]
    appended = _appended(text, entry)
    if appended is not None and _entries_or_none(appended, path, catalog) == expected:
        _write(path, appended)
        return True
    _write(path, _document(expected))
    return not text.strip()


def remove_device(path: Path, key: DeviceKey, catalog: ProfileCatalog) -> bool:
    """Remove the device of ``key``; False if the file had to be rewritten without its comments."""
    text = path.read_text(encoding="utf-8")
    entries = _entries(text, path, catalog)
    expected = [e for e in entries if e.key != key]
    if len(expected) == len(entries):
        raise KeyError(f"{path} has no device {key.site}/{key.line}/{key.device}")
    cut = _without(text, entries.index(next(e for e in entries if e.key == key)))
    if cut is not None and _entries_or_none(cut, path, catalog) == expected:
        _write(path, cut)
        return True
    _write(path, _document(expected))
    return False


def _entries(text: str, path: Path, catalog: ProfileCatalog) -> list[DeviceEntry]:
    return [device.entry for device in parse_registry(text, str(path), catalog)] if text.strip() else []


def _entries_or_none(text: str, path: Path, catalog: ProfileCatalog) -> list[DeviceEntry] | None:
    try:
        return _entries(text, path, catalog)
    except ValueError:
        return None


def _sequence(text: str) -> yaml.SequenceNode | None:
    """The block sequence under ``devices:``, if the document has one."""
    root = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if key.value == "devices" and isinstance(value, yaml.SequenceNode) and not value.flow_style and value.value:
            return value
    return None


def _entry_text(entry: DeviceEntry, dash_column: int) -> str:
    lines = yaml.safe_dump([entry.model_dump(exclude_defaults=True)], allow_unicode=True, sort_keys=False).splitlines()
    return "".join(" " * dash_column + line + "\n" for line in lines)


def _appended(text: str, entry: DeviceEntry) -> str | None:
    sequence = _sequence(text)
    if sequence is None:
        return None
    return (text if text.endswith("\n") else text + "\n") + _entry_text(entry, sequence.start_mark.column)


def _without(text: str, index: int) -> str | None:
    """``text`` without the lines of the sequence's item ``index``; comments around it stay."""
    sequence = _sequence(text)
    if sequence is None:
        return None
    item = sequence.value[index]
    lines = text.splitlines(keepends=True)
    first = item.start_mark.line
    while first > 0 and not lines[first].lstrip().startswith("-"):
        first -= 1
    if not isinstance(item, yaml.MappingNode) or not item.value:
        return None
    last = max(_end_line(node) for pair in item.value for node in pair)
    return "".join(lines[:first] + lines[last + 1 :])


def _end_line(node: yaml.Node) -> int:
    """The last line holding ``node`` (a scalar's end mark may sit at the start of the next line)."""
    end = node.end_mark
    return end.line - 1 if end.column == 0 and end.line > node.start_mark.line else end.line


def _document(entries: list[DeviceEntry]) -> str:
    return yaml.safe_dump(
        {"devices": [e.model_dump(exclude_defaults=True) for e in entries]}, allow_unicode=True, sort_keys=False
    )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
