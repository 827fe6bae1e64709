"""Central redaction of secrets (DESIGN §8b): config values and URLs.

Every backend write and every report goes through :func:`redact_config`; error messages that
mention a URL go through :func:`scrub_url`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"
_SECRET_RE = re.compile(r"(key|token|secret|password|passwd|credential)", re.I)


def is_secret_key(key: str) -> bool:
    """True for config keys that look secret (``api_key``, ``hf_token``, ``db_password`` ...)."""
    return bool(_SECRET_RE.search(str(key)))


def redact_config(value: Any) -> Any:
    """A copy of ``value`` (dicts/lists nested) with secret-looking keys' values replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact_config(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_config(v) for v in value]
    return value


def scrub_url(url: str) -> str:
    """Drop ``user:password@`` from a URL (and mask query values named like secrets)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@" + netloc.rsplit("@", 1)[1]
    query = re.sub(r"((?:key|token|secret|password|credential)[^=&]*=)[^&]*", rf"\1{REDACTED}",
                   parts.query, flags=re.I)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
