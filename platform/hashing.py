"""Content hashes: the identity of a configuration, independent of key order."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

__all__ = ["content_hash"]


def content_hash(value: Any, length: int, default: Callable[[Any], Any] | None = None) -> str:
    """First ``length`` hex digits of the sha256 of ``value`` as JSON with sorted keys.

    ``default`` converts what JSON cannot hold (e.g. ``str`` for paths); without it such values
    raise, so a key never silently depends on ``repr``.
    """
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=default).encode()).hexdigest()[:length]
