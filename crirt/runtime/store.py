"""In-memory index of sandboxes and containers, with unique names and atomic persistence.

Invariant: the index is the only source the hot paths (List*, *Status) read; it is rebuilt from
the ``*.json`` records under the state directory when the server starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from crirt.errors import AlreadyExists, InvalidArgument, NotFound
from crirt.runtime.model import Container, Sandbox

T = TypeVar("T", Sandbox, Container)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so a crash of crirt leaves either the old file or the new one, never a torn one.

    No fsync: these files live in the state directory (``/run``), which describes processes
    that do not outlive the machine; a crirt crash loses nothing the page cache holds. (An fsync
    here waited for the journal behind every overlay mount and rmtree of the moment: ~10 ms per
    record on this machine's disk, three records per CreateContainer.)
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)


class Index(Generic[T]):
    """Objects by id, with name reservation and unique-prefix lookup (like CRI-O's truncindex)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._by_id: dict[str, T] = {}
        self._names: dict[str, str] = {}

    def reserve(self, name: str, obj_id: str) -> None:
        holder = self._names.get(name)
        if holder is not None and holder != obj_id:
            raise AlreadyExists(f"{self.kind} name {name!r} is reserved by {holder}")
        self._names[name] = obj_id

    def release(self, name: str, obj_id: str) -> None:
        if self._names.get(name) == obj_id:
            del self._names[name]

    def find_by_name(self, name: str) -> T | None:
        holder = self._names.get(name)
        return self._by_id.get(holder) if holder is not None else None

    def add(self, obj: T) -> None:
        self._by_id[obj.id] = obj
        self._names[obj.name] = obj.id

    def remove(self, obj: T) -> None:
        self._by_id.pop(obj.id, None)
        self.release(obj.name, obj.id)

    def find(self, obj_id: str) -> T | None:
        """Full id or unique prefix; None if absent. Ambiguous prefixes are an error."""
        if not obj_id:
            raise InvalidArgument(f"{self.kind} id must not be empty")
        hit = self._by_id.get(obj_id)
        if hit is not None:
            return hit
        matches = [v for k, v in self._by_id.items() if k.startswith(obj_id)]
        if len(matches) > 1:
            raise InvalidArgument(f"{self.kind} id prefix {obj_id!r} is ambiguous")
        return matches[0] if matches else None

    def get(self, obj_id: str) -> T:
        hit = self.find(obj_id)
        if hit is None:
            raise NotFound(f"{self.kind} {obj_id!r} not found")
        return hit

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)
