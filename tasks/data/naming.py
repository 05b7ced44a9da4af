"""How a partition is named: in tables and plots, and in MLflow metric keys."""

from __future__ import annotations

import hashlib
import re
from typing import Any

_KEY_SAFE = re.compile(r"[^A-Za-z0-9_\-. ]")


def partition_label(values: dict[str, Any]) -> str:
    """``k1=v1/k2=v2``: how a partition is named in tables and plots (original values kept)."""
    # a null partition (hive's __HIVE_DEFAULT_PARTITION__) reads "null", as Polars prints it
    return "/".join(f"{k}={'null' if v is None else v}" for k, v in values.items()) if values else "all"


def metric_key_suffix(values: dict[str, Any]) -> str:
    """A valid, unique MLflow key part for a partition (hostile values are sanitised and hashed)."""
    raw = ".".join(f"{k}_{'null' if v is None else v}" for k, v in values.items()) if values else "all"
    safe = _KEY_SAFE.sub("_", raw).strip(" ")
    safe = safe.replace("..", "_")[:120] or "_"
    ambiguous = (
        safe != raw  # sanitised: two values may now read the same
        or safe != safe.lower()  # stores that compare keys case-insensitively would merge them
        or any(v is None for v in values.values())  # null reads as the string "None"
        or (len(values) > 1 and any("." in str(v) for v in values.values()))  # the join is ambiguous
    )
    if ambiguous:
        identity = repr(list(values.items()))
        safe = f"{safe}-{hashlib.blake2b(identity.encode(), digest_size=4).hexdigest()}"
    return safe
