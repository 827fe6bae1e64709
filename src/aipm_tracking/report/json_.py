"""``--format json``: exactly ``Comparison.to_dict()`` (DESIGN §6), as strict JSON.

Non-finite floats anywhere (e.g. inside ``details``) become ``null`` and numpy scalars or
arrays become plain numbers/lists, so the output always parses with a strict JSON reader.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..schema import Comparison
from .base import ReportOptions


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    tolist = getattr(x, "tolist", None)  # numpy scalar / array
    if callable(tolist):
        return _clean(tolist())
    return str(x)


def to_jsonable(cmp: Comparison) -> dict[str, Any]:
    """``cmp.to_dict()`` with NaN/inf -> None and numpy values -> Python values."""
    out: dict[str, Any] = _clean(cmp.to_dict())
    return out


def render_json(cmp: Comparison, opts: ReportOptions) -> str:
    """Comparison -> the JSON document of DESIGN §6 (indent 2, trailing newline)."""
    return json.dumps(to_jsonable(cmp), indent=2, allow_nan=False) + "\n"
