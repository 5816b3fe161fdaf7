"""Small JSON status files the demo's processes rewrite and the demo reads.

Written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write(path: str | Path, status: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(status, f, separators=(",", ":"))
    os.replace(tmp, path)


def read(path: str | Path) -> dict[str, Any] | None:
    """The last status written, or None if there is none yet (or it is unreadable)."""
    try:
        with open(path) as f:
            status = json.load(f)
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None
