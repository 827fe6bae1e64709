"""MLflow's naming rules and batch limits, and how aipm names map onto them.

Pure Python (no mlflow import) so it is cheap to test. MLflow accepts metric/param/tag keys
made of letters, digits, ``_ - . / :`` and spaces, at most 250 characters, that stay the same
under path normalisation; aipm's per-slice metric names (``accuracy[slice=de]``) are not
valid there, so they are written as ``accuracy/slice:de`` and read back the other way.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from aipm_tracking.errors import BackendError

#: MLflow's limits (mlflow.utils.validation), fixed by its REST API.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
#: MLflow rejects log_batch bodies over 1 MB; we stay well below.
MAX_BATCH_BYTES = 800_000

_VALID_KEY = re.compile(r"^[/\w.\- :]*$")
_SLICE_NAME = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<dim>[A-Za-z_][\w.-]*)=(?P<val>[^\]]*)\]$")
_SLICE_KEY = re.compile(r"^(?P<base>[^/]+)/(?P<dim>[A-Za-z_][\w.-]*):(?P<val>.+)$")
_BAD_CHARS = re.compile(r"[^/\w.\- :]")

T = TypeVar("T")


def is_valid_key(key: str) -> bool:
    """True when MLflow accepts ``key`` as a metric/param/tag name."""
    if not key or len(key) > MAX_KEY_LENGTH or not _VALID_KEY.match(key):
        return False
    norm = posixpath.normpath(key)
    return not (norm != key or norm == "." or norm.startswith("..") or norm.startswith("/"))


def to_mlflow_key(name: str, what: str = "metric") -> str:
    """aipm name -> MLflow key (``accuracy[slice=de]`` -> ``accuracy/slice:de``).

    Characters MLflow refuses become ``_``; a name that still cannot be written (too long,
    empty) raises :class:`BackendError` naming it. Never truncates.
    """
    key = name
    m = _SLICE_NAME.match(name)
    if m:
        key = f"{m['base']}/{m['dim']}:{m['val']}"
    if not is_valid_key(key):
        key = _BAD_CHARS.sub("_", key)
        key = re.sub(r"/+", "/", key).strip("/") or "_"
        key = "/".join(p if p not in (".", "..") else p.replace(".", "_") for p in key.split("/"))
    if len(key) > MAX_KEY_LENGTH:
        raise BackendError(f"{what} key {name!r} is {len(key)} characters; MLflow allows "
                           f"{MAX_KEY_LENGTH} (rename it)")
    if not is_valid_key(key):
        raise BackendError(f"{what} key {name!r} cannot be written to MLflow")
    return key


def from_mlflow_key(key: str) -> str:
    """MLflow key written by :func:`to_mlflow_key` -> aipm name (``a/slice:de`` -> ``a[slice=de]``)."""
    m = _SLICE_KEY.match(key)
    if m:
        return f"{m['base']}[{m['dim']}={m['val']}]"
    return key


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> flat ``{"a.b": "value"}`` strings (lists/others as JSON)."""
    out: dict[str, str] = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_config(v, prefix=f"{name}."))
        elif isinstance(v, str):
            out[name] = v
        elif isinstance(v, (bool, int, float)) or v is None:
            out[name] = json.dumps(v)
        else:
            out[name] = json.dumps(v, default=str, sort_keys=True)
    return out


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` items."""
    buf: list[T] = []
    for it in items:
        buf.append(it)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def kv_batches(params: list[tuple[str, str]], tags: list[tuple[str, str]]
               ) -> Iterator[tuple[list[tuple[str, str]], list[tuple[str, str]]]]:
    """Pair params and tags into ``log_batch`` calls within MLflow's count and size limits."""
    pi, ti = 0, 0
    while pi < len(params) or ti < len(tags):
        size = 0
        ps: list[tuple[str, str]] = []
        ts: list[tuple[str, str]] = []
        while pi < len(params) and len(ps) < MAX_PARAMS_TAGS_PER_BATCH:
            n = len(params[pi][0]) + len(params[pi][1]) + 64
            if ps and size + n > MAX_BATCH_BYTES:
                break
            ps.append(params[pi])
            size += n
            pi += 1
        while ti < len(tags) and len(ts) < MAX_PARAMS_TAGS_PER_BATCH:
            n = len(tags[ti][0]) + len(tags[ti][1]) + 64
            if (ps or ts) and size + n > MAX_BATCH_BYTES:
                break
            ts.append(tags[ti])
            size += n
            ti += 1
        yield ps, ts
