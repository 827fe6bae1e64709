"""Central redaction of secrets (DESIGN §8b): config values and URLs.

Every backend write and every report goes through :func:`redact_config`; error messages that
mention a URL go through :func:`scrub_url`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"
_SECRET_RE = re.compile(r"(key|secret|password|passwd|credential)", re.I)
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_RE = re.compile(r"[^a-z0-9]+")
#: ``<token>_id``, ``<token>_type_ids``, ``<token>_count``: about tokens, not a credential.
_TOKEN_NOT_SECRET_NEXT = frozenset({
    "id", "ids", "type", "types", "count", "counts", "len", "length", "lengths", "limit",
    "limits", "budget", "index", "idx", "num", "number", "size", "ratio", "rate", "level",
    "dropout", "embedding", "embeddings", "classification", "weight", "weights"})
#: ``pad_token``, ``max_token``, ``special_token``: a vocabulary entry or a count.
_TOKEN_NOT_SECRET_PREV = frozenset({
    "pad", "eos", "bos", "unk", "sep", "cls", "mask", "special", "start", "end", "stop",
    "decoder", "max", "min", "num", "n", "total", "avg", "average", "per", "first", "last"})


def _is_token_secret(key: str) -> bool:
    """``token``, ``api_token``, ``hf_token``, ``accessToken`` ... but not key names *about*
    tokens: ``max_tokens``, ``average_tokens_across_devices``, ``tokenizer``, ``pad_token_id``."""
    words = [w for w in _WORD_RE.split(_CAMEL_RE.sub("_", key).lower()) if w]
    for i, w in enumerate(words):
        if not w.endswith("token"):
            continue  # tokens, tokenizer, num_input_tokens_seen ...
        nxt = words[i + 1] if i + 1 < len(words) else ""
        prev = words[i - 1] if i > 0 else ""
        if nxt in _TOKEN_NOT_SECRET_NEXT or (w == "token" and prev in _TOKEN_NOT_SECRET_PREV):
            continue
        return True
    return False


def is_secret_key(key: str) -> bool:
    """True for config keys that look secret (``api_key``, ``hf_token``, ``db_password`` ...).

    Keys about token *counts* or vocabulary tokens (``average_tokens_across_devices``,
    ``max_new_tokens``, ``pad_token_id``) are not secrets and are kept.
    """
    k = str(key)
    return bool(_SECRET_RE.search(k)) or _is_token_secret(k)


def redact_config(value: Any) -> Any:
    """A copy of ``value`` (dicts/lists nested) with secret-looking keys' values replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact_config(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_config(v) for v in value]
    return value


def scrub_url(url: str) -> str:
    """Drop ``user:password@`` from a URL (and mask query values named like secrets).

    Secret-named query values include the signatures of presigned storage URLs
    (``X-Amz-Signature``, ``X-Amz-Credential``, ``X-Amz-Security-Token``,
    ``X-Goog-Signature``, Azure SAS ``sig``): such a URL grants access until it expires.
    Other parameters (``X-Amz-Expires``, ``sv``, ``se`` ...) stay readable."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@" + netloc.rsplit("@", 1)[1]
    query = re.sub(r"((?:(?:key|token|secret|password|passwd|credential|signature)[^=&]*"
                   r"|(?<![A-Za-z0-9])sig)=)[^&]*", rf"\1{REDACTED}", parts.query, flags=re.I)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
