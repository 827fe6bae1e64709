"""MLflow's naming rules and batch limits, and how aipm names map onto them.

Pure Python (no mlflow import) so it is cheap to test. MLflow accepts metric/param/tag keys
made of letters, digits, ``_ - . / :`` and spaces, at most 250 characters, that stay the same
under path normalisation. aipm accepts any name, so :func:`to_mlflow_key` maps names onto
MLflow keys **injectively** (two names never share a key) and :func:`from_mlflow_key` gives
the exact name back (key format 3, tag ``aipm.key_format=3``):

* per-slice metric names ``accuracy[slice=de]`` are written ``accuracy/slice:de`` (readable
  in MLflow's UI): a *slice key* is a key whose part before its first ``:`` ends in
  ``/DIM``;
* every other character MLflow refuses, a ``/`` that would not survive path normalisation
  (leading, trailing, doubled), a ``.``/``..`` path segment and the escape character ``ǀ``
  (U+01C0) itself become ``ǀHEXǀ`` (the code point in lowercase hex): ``loss@train`` ->
  ``lossǀ40ǀtrain``;
* a ``:`` is escaped only where the key would otherwise be read as a slice key: in the base
  of a slice name, and in a plain name that looks like a slice key (``val/f1:macro`` ->
  ``val/f1ǀ3aǀmacro``). Names made of MLflow's characters only that cannot be taken for a
  slice key (``train/loss``, ``eval:acc``, ``a b``) are written as they are.

Runs written with format 2 (every ``:`` outside a slice key, and every ``/`` of a slice value,
escaped) keep being read, and continued, with :func:`from_mlflow_key_v2` /
:func:`to_mlflow_key_v2`; runs written by older versions of the plugin (``_`` for refused
characters, any ``a/b:c`` metric read as a slice) with :func:`from_legacy_key` /
:func:`legacy_to_mlflow_key`; runs written by other code are read as they are.
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
_DIM = re.compile(r"^[A-Za-z_][\w.-]*$")
#: Slice dimensions of format 3: no escape character (so an escaped ``:`` is never in one).
_DIM3 = re.compile("^(?!.*\u01c0)[A-Za-z_][\\w.-]*$")
_BAD_CHARS = re.compile(r"[^/\w.\- :]")
_PLAIN_CHAR = re.compile(r"^[\w.\- ]$")
#: The escape character: a letter for MLflow (``\w``), so escaped keys are valid keys.
ESC = "\u01c0"
_ESCAPED = re.compile(ESC + r"([0-9a-f]{1,6})" + ESC)
#: Value of the tag ``aipm.key_format`` on runs whose keys use this module's encoding.
KEY_FORMAT = "3"
#: The previous encoding (still read, and used to continue its runs).
KEY_FORMAT_V2 = "2"

T = TypeVar("T")


def is_valid_key(key: str) -> bool:
    """True when MLflow accepts ``key`` as a metric/param/tag name."""
    if not key or len(key) > MAX_KEY_LENGTH or not _VALID_KEY.match(key):
        return False
    norm = posixpath.normpath(key)
    return not (norm != key or norm == "." or norm.startswith("..") or norm.startswith("/"))


def _esc_char(c: str) -> str:
    return f"{ESC}{ord(c):x}{ESC}"


def _escape(text: str, *, slashes: bool, colons: bool = True) -> str:
    """``text`` with every character MLflow refuses (and ``ǀ``; ``:`` when ``colons``)
    escaped. With ``slashes``, a ``/`` between two non-empty segments stays a path
    separator."""
    n = len(text)
    segments: list[str] = []
    cur: list[str] = []
    for i, c in enumerate(text):
        if c == "/" and slashes and 0 < i < n - 1 and text[i - 1] != "/":
            segments.append("".join(cur))
            cur = []
            continue
        cur.append(c)
    segments.append("".join(cur))
    out: list[str] = []
    for j, seg in enumerate(segments):
        chars = [c if c != ESC and (_PLAIN_CHAR.match(c) or (c == ":" and not colons))
                 else _esc_char(c) for c in seg]
        # "." / ".." segments and a leading ".." are changed by path normalisation
        if seg in (".", "..") or (j == 0 and seg.startswith("..")):
            chars[0] = _esc_char(".")
        out.append("".join(chars))
    return "/".join(out)


def _unescape(text: str) -> str:
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)


def _too_long(name: str, key: str, what: str) -> BackendError:
    grew = "" if key == name else f" once written for MLflow ({key[:40]!r}...)"
    return BackendError(f"{what} key {name!r} is {len(key)} characters{grew}; MLflow allows "
                        f"{MAX_KEY_LENGTH} (rename it)")


def _checked(name: str, key: str, what: str) -> str:
    if len(key) > MAX_KEY_LENGTH:
        raise _too_long(name, key, what)
    if not is_valid_key(key):
        raise BackendError(f"{what} key {name!r} cannot be written to MLflow")
    return key


def _split_slice_key(key: str) -> tuple[str, str, str] | None:
    """(base, dim, value) of a format-3 slice key ``BASE/DIM:VALUE`` (split at the first
    ``:``, then at the last ``/`` before it), or None."""
    head, colon, val = key.partition(":")
    if not colon:
        return None
    base, slash, dim = head.rpartition("/")
    if not slash or not base or not _DIM3.match(dim):
        return None
    return base, dim, val


def _encode(name: str) -> str:
    m = _SLICE_NAME.match(name)
    if m and _DIM3.match(m["dim"]):
        # the base has no bare ":" (the first ":" ends the dimension); the value may
        return (f"{_escape(m['base'], slashes=True)}/{m['dim']}:"
                f"{_escape(m['val'], slashes=True, colons=False)}")
    key = _escape(name, slashes=True, colons=False)
    if _split_slice_key(key) is not None:  # would be read back as a slice: escape its ":"
        key = _escape(name, slashes=True)
    return key


def to_mlflow_key(name: str, what: str = "metric") -> str:
    """aipm name -> MLflow key (format 3), injective (see the module doc):
    ``accuracy[slice=de]`` -> ``accuracy/slice:de``, ``loss@train`` -> ``lossǀ40ǀtrain``,
    ``eval:acc`` -> ``eval:acc``.

    A name whose key is too long (or empty) raises :class:`BackendError` naming it. Never
    truncates.
    """
    return _checked(name, _encode(name), what)


def from_mlflow_key(key: str) -> str:
    """MLflow key written by :func:`to_mlflow_key` -> the aipm name it was written for.

    Keys :func:`to_mlflow_key` cannot have produced are returned unchanged.
    """
    try:
        parts = _split_slice_key(key)
        if parts is not None:
            base, dim, val = parts
            name = f"{_unescape(base)}[{dim}={_unescape(val)}]"
        else:
            name = _unescape(key)
        return name if to_mlflow_key(name) == key else key
    except (BackendError, ValueError, OverflowError):
        return key


def _encode_v2(name: str) -> str:
    m = _SLICE_NAME.match(name)
    if m:
        return (f"{_escape(m['base'], slashes=True)}/{m['dim']}:"
                f"{_escape(m['val'], slashes=False)}")
    return _escape(name, slashes=True)


def to_mlflow_key_v2(name: str, what: str = "metric") -> str:
    """aipm name -> MLflow key in format 2 (every ``:`` outside a slice key escaped): to
    continue, and find the series of, runs written with it."""
    return _checked(name, _encode_v2(name), what)


def from_mlflow_key_v2(key: str) -> str:
    """MLflow key written by :func:`to_mlflow_key_v2` -> its aipm name (others unchanged)."""
    try:
        if ":" in key:
            head, _, val = key.partition(":")
            base, slash, dim = head.rpartition("/")
            if not slash or not _DIM.match(dim) or ":" in val:
                return key
            name = f"{_unescape(base)}[{dim}={_unescape(val)}]"
        else:
            name = _unescape(key)
        return name if to_mlflow_key_v2(name) == key else key
    except (BackendError, ValueError, OverflowError):
        return key


def legacy_to_mlflow_key(name: str, what: str = "metric") -> str:
    """The key older versions of the plugin wrote for ``name`` (to find their series, and to
    continue their runs in their own encoding; not injective)."""
    key = name
    m = _SLICE_NAME.match(name)
    if m:
        key = f"{m['base']}/{m['dim']}:{m['val']}"
    if not is_valid_key(key):
        key = _BAD_CHARS.sub("_", key)
        key = re.sub(r"/+", "/", key).strip("/") or "_"
        key = "/".join(p if p not in (".", "..") else p.replace(".", "_") for p in key.split("/"))
    return _checked(name, key, what)


def from_legacy_key(key: str) -> str:
    """Name of a key written by older versions of the plugin (``a/slice:de`` -> ``a[slice=de]``)."""
    m = _SLICE_KEY.match(key)
    if m:
        return f"{m['base']}[{m['dim']}={m['val']}]"
    return key


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> flat ``{"a.b": "value"}`` strings (lists/others as JSON).

    Two entries that flatten to the same name (``{"a": {"b": 1}, "a.b": 2}``) are a
    :class:`BackendError` naming it: MLflow would keep only one of them.
    """
    out: dict[str, str] = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            for sub, text in flatten_config(v, prefix=f"{name}.").items():
                _put_once(out, sub, text)
            continue
        if name in out:
            _put_once(out, name, "")
        if isinstance(v, str):
            out[name] = v
        elif isinstance(v, (bool, int, float)) or v is None:
            out[name] = json.dumps(v)
        else:
            out[name] = json.dumps(v, default=str, sort_keys=True)
    return out


def _put_once(out: dict[str, str], name: str, value: str) -> None:
    if name in out:
        raise BackendError(f"config key {name!r} appears twice once nested keys are joined "
                           f"with '.' (MLflow params are flat): rename one")
    out[name] = value


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
