"""JSON text as the durable stores keep it: compact, and only what JSON can hold.

NaN and infinities are refused (they are not JSON, and PostgreSQL's JSON has none), so what the
SQLite store keeps, the PostgreSQL store keeps too, and both read it back equal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from .base import StoreError


def to_json(value: Mapping[str, Any]) -> str:
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: nested beyond the stack
        raise StoreError(f"not storable as JSON: {exc}") from exc


# One encoder: ``json.dumps`` with options builds a new one per call.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
