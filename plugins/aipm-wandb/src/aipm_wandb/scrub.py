"""Secrets out of error text (DESIGN §8b): one helper for every message the plugin raises.

wandb's own exception text often repeats the server URL as configured, with its
``user:password@`` and query (``?api_key=…``), or other request details. Every message
that carries such text goes through :func:`scrub_message` before it is raised or warned:

* every URL in it goes through :func:`aipm_tracking.redact.scrub_url` (credentials and
  secret-named query values masked);
* ``name=value`` / ``name: value`` pairs whose name looks secret (``api_key``, ``token``,
  ``password``, ``accessToken`` …, but not a bare ``key``) lose their value, in or out of
  a URL (a quoted value up to its closing quote);
* the literal values of the known secrets are masked wherever they appear (also
  percent-encoded): ``$WANDB_API_KEY``, the password and secret query values of
  ``$WANDB_BASE_URL`` and of any URL registered with :func:`remember_url`, and keys
  registered with :func:`remember_secret` (the key a ``wandb.Api`` resolved).

Imports nothing heavy.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from aipm_tracking.redact import REDACTED, scrub_url

#: A URL with a scheme: up to whitespace, a quote or a bracket.
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`\])}]+")
#: ``api_key=VALUE``, ``"password": "VALUE"``, ``token: VALUE`` (name looks secret).
#: The secret word ends the name: after a separator (``x-api-key``, ``WANDB_API_KEY``) or as
#: the capitalised tail of a camelCase name (``apiKey``, ``accessToken``, ``wandbApiKey``),
#: so ``KeyError:``, ``monkey:`` and ``max_tokens=`` are left alone. A bare ``key`` is
#: no secret name (``invalid key: 'acc'``, ``key=value pairs``, ``login(key=[...])``).
#: A quoted value is masked up to its closing quote (whitespace and all), a bracketed one
#: inside its brackets; a bare value stops before a bracket that closes a call.
_SECRET_WORD = (r"(?i:(?:api[_.\-]?)?"
                r"(?:key|token|secret|password|passwd|credentials?|authorization))")
_PAIR_RE = re.compile(
    r"(?<![A-Za-z0-9])(?!(?i:key)(?![A-Za-z0-9_.\-]))"  # not the bare name ``key``
    r"(?P<name>(?:[A-Za-z0-9]+[_.\-]|[A-Za-z0-9]*[a-z0-9](?=[A-Z]))*" + _SECRET_WORD + r")"
    r"(?P<sep>[\"']?\s*[=:]\s*)"
    r"(?:(?P<quote>[\"'])(?:(?!(?P=quote))[^\n])*(?P<endq>(?P=quote))?"
    r"|(?P<bracket>\[[^\s\]]*\])"
    r"|(?P<value>(?:(?i:bearer|basic)\s+)?[^\s&'\",;)\]}]*[^\s&'\",;)\]}.:!?]))")
#: Query names whose value :func:`scrub_url` masks (as it does, presigned-URL signatures too).
_SECRET_NAME_RE = re.compile(
    r"key|token|secret|password|passwd|credential|signature|(?<![A-Za-z0-9])sig$", re.I)
#: A secret shorter than this is not masked as a literal (it would garble the text);
#: it is still masked inside URLs and ``name=value`` pairs.
_MIN_LITERAL = 4

_urls: set[str] = set()
_secrets: set[str] = set()


def remember_url(url: str | None) -> None:
    """Mask the credentials of ``url`` in every later message (a configured base URL)."""
    if url:
        _urls.add(str(url))


def remember_secret(value: str | None) -> None:
    """Mask ``value`` (an API key) in every later message."""
    if value and len(str(value)) >= _MIN_LITERAL:
        _secrets.add(str(value))


def _url_secrets(url: str) -> set[str]:
    out: set[str] = set()
    try:
        parts = urlsplit(url)
    except ValueError:
        return out
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        out.add(userinfo)
        if ":" in userinfo:
            out.add(userinfo.split(":", 1)[1])
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if _SECRET_NAME_RE.search(name):
            out.add(value)
    return out


def known_secrets(extra_urls: tuple[str | None, ...] = ()) -> list[str]:
    """Literal values to mask, longest first (so a value containing another goes whole)."""
    found = set(_secrets)
    key = os.environ.get("WANDB_API_KEY")
    if key:
        found.add(key)
    for url in (*_urls, os.environ.get("WANDB_BASE_URL"), *extra_urls):
        if url:
            found |= _url_secrets(url)
    variants: set[str] = set()
    for s in found:
        for v in (s, unquote(s), quote(s, safe=""), quote(unquote(s), safe="")):
            if len(v) >= _MIN_LITERAL:
                variants.add(v)
    return sorted(variants, key=len, reverse=True)


def _scrub_match(m: re.Match[str]) -> str:
    url = m.group(0)
    tail = url[len(url.rstrip(".,:;!?")):]  # sentence punctuation after the URL stays
    return scrub_url(url[:len(url) - len(tail)]) + tail


def _mask_pair(m: re.Match[str]) -> str:
    """``name=***``, keeping the quotes or brackets around the value."""
    head = f"{m.group('name')}{m.group('sep')}"
    if m.group("quote") is not None:  # an unclosed quote: masked to the end of the line
        return f"{head}{m.group('quote')}{REDACTED}{m.group('endq') or ''}"
    if m.group("bracket") is not None:
        return f"{head}[{REDACTED}]"
    return f"{head}{REDACTED}"


def scrub_message(text: str, *urls: str | None) -> str:
    """``text`` with every URL scrubbed, secret-named values and known secrets masked.

    ``urls``: URLs whose credentials are masked too (besides ``$WANDB_BASE_URL`` and the
    remembered ones)."""
    out = _URL_RE.sub(_scrub_match, str(text))
    out = _PAIR_RE.sub(_mask_pair, out)
    for secret in known_secrets(tuple(urls)):
        out = out.replace(secret, REDACTED)
    return out


def error_line(e: BaseException, *urls: str | None, limit: int = 300) -> str:
    """The first line of ``e``'s text, scrubbed (before cutting: a cut URL would escape)."""
    text = scrub_message(str(e).strip(), *urls)
    return text.splitlines()[0][:limit] if text else type(e).__name__


__all__ = ["error_line", "known_secrets", "remember_secret", "remember_url", "scrub_message"]
