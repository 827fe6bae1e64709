"""Where the MLflow store is, how hard to retry it, and how its failures are reported.

* The tracking URI comes from ``BackendOptions.mlflow_uri``, else ``$MLFLOW_TRACKING_URI``,
  else MLflow's own default (``sqlite:///mlflow.db`` in MLflow 3). The deprecated file
  store (``./mlruns``, ``file:``) is refused with a hint.
* Retries: MLflow's REST client retries transient failures (429, 5xx, connect errors,
  timeouts) itself with exponential backoff and honours ``Retry-After``; its defaults
  (7 retries, 120 s timeout: minutes of waiting) are bounded here by setting
  ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``_TIMEOUT`` / ``_BACKOFF_FACTOR`` when the user has
  not set them (``BackendOptions.extra`` keys ``mlflow_max_retries``, ``mlflow_timeout_s``,
  ``mlflow_backoff_factor`` override both).
* Every failure becomes one :class:`~aipm_tracking.errors.BackendError` line with the URI's
  credentials scrubbed (DESIGN §8b).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aipm_tracking.backends.base import BackendOptions
from aipm_tracking.errors import (
    AipmError,
    BackendError,
    RunNotFoundError,
    UsageError,
)
from aipm_tracking.redact import scrub_url

DEFAULT_MAX_RETRIES = 3
DEFAULT_TIMEOUT_S = 30
DEFAULT_BACKOFF_FACTOR = 1

_ENV = {
    "mlflow_max_retries": ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", DEFAULT_MAX_RETRIES),
    "mlflow_timeout_s": ("MLFLOW_HTTP_REQUEST_TIMEOUT", DEFAULT_TIMEOUT_S),
    "mlflow_backoff_factor": ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", DEFAULT_BACKOFF_FACTOR),
}
_URL_IN_TEXT = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>)]+", re.I)


@dataclass(frozen=True)
class Endpoint:
    """A resolved tracking URI and its printable (credential-free) form."""

    uri: str
    safe: str

    @property
    def is_http(self) -> bool:
        return self.uri.startswith(("http://", "https://"))

    @property
    def sqlite_path(self) -> str | None:
        """Filesystem path of a ``sqlite:///`` store (None for other stores)."""
        if not self.uri.startswith("sqlite:///"):
            return None
        path = self.uri[len("sqlite:///"):].split("?", 1)[0]
        return "/" + path.lstrip("/") if self.uri.startswith("sqlite:////") else path


def resolve_endpoint(options: BackendOptions) -> Endpoint:
    """The tracking URI to use (see module doc); refuses the deprecated file store."""
    uri = options.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        from mlflow.tracking import get_tracking_uri

        uri = get_tracking_uri()
    uri = uri.strip()
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme in ("", "file") or scheme not in (
            "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks") \
            and not scheme.startswith(("postgresql+", "mysql+", "mssql+")):
        raise UsageError(
            f"MLflow tracking URI {scrub_url(uri)!r} is not supported: use sqlite:///PATH.db "
            f"or http(s)://HOST:PORT (MLflow 3's file store is deprecated)")
    return Endpoint(uri=uri, safe=scrub_text(uri))


def sqlite_file(uri: str) -> str | None:
    """The database file of a ``sqlite:///PATH`` URI (None for other stores, ``:memory:``)."""
    if not uri.lower().startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if not path or path == ":memory:" else path


def quiet_store_logs() -> None:
    """MLflow logs "Creating initial MLflow database tables..." (and alembic its migrations)
    at INFO on stderr: noise around aipm's one-line output, unless AIPM_DEBUG is set."""
    import logging

    if os.environ.get("AIPM_DEBUG"):
        return
    for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_http(options: BackendOptions) -> int:
    """Bound MLflow's HTTP retries (env defaults, options win); return the number of tries."""
    for opt, (env, default) in _ENV.items():
        val = options.extra.get(opt)
        if val is not None:
            os.environ[env] = str(int(val))
        else:
            os.environ.setdefault(env, str(default))
    # MLflow's tqdm bars would write to stderr on every artifact download
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # ... and set_terminated prints "View run ... at" on stdout (breaks --format json)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    return tries()


def tries() -> int:
    """How many attempts one request gets (first try + retries), as configured now."""
    try:
        return int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", DEFAULT_MAX_RETRIES)) + 1
    except ValueError:
        return DEFAULT_MAX_RETRIES + 1


def _scrub_one(url: str) -> str:
    """``scrub_url`` only where there is something to hide (keeps ``sqlite:////abs`` intact)."""
    return scrub_url(url) if ("@" in url or "?" in url) else url


def scrub_text(text: str, cap: int | None = 400) -> str:
    """Remove credentials from every URL inside ``text``; cap its length (``cap=None``: no cap)."""
    out = _URL_IN_TEXT.sub(lambda m: _scrub_one(m.group(0)), str(text))
    out = re.sub(r"(Authorization|Bearer|Basic)\s*[:=]?\s*\S+", r"\1 ***", out)
    return out if cap is None or len(out) <= cap else out[:cap] + "…"


class ScrubbedError(Exception):
    """Stands in for an mlflow/requests exception whose text held credentials: it keeps the
    original's type name, text (scrubbed) and traceback, so ``AIPM_DEBUG=1`` shows them."""


def _scrubbed_cause(exc: BaseException) -> BaseException:
    """``exc`` itself when its chain's text is clean, else a :class:`ScrubbedError` copy."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain and len(chain) < 20:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    if all(scrub_text(str(e), cap=None) == str(e) for e in chain):
        return exc
    out: BaseException | None = None
    for e in reversed(chain):  # rebuild the chain innermost first, every text scrubbed
        new = ScrubbedError(f"{type(e).__module__}.{type(e).__name__}: "
                            f"{scrub_text(str(e), cap=None)}").with_traceback(e.__traceback__)
        new.__cause__ = out
        out = new
    assert out is not None
    return out


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else str(text)


def _transport_cause(text: str) -> str | None:
    """A short cause when ``text`` says the server did not answer properly, else None."""
    t = text.lower()
    m = re.search(r"too many (\d{3}) error responses", t)
    if m:
        code = m.group(1)
        return f"HTTP {code}" + (" (rate limited)" if code == "429" else " (server error)")
    if "timeout" in t or "timed out" in t:
        return "request timed out (MLFLOW_HTTP_REQUEST_TIMEOUT=" \
               f"{os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '?')} s)"
    if "connection refused" in t or "newconnectionerror" in t or "failed to establish" in t:
        return "connection refused"
    if "max retries exceeded" in t or "connection aborted" in t or "remotedisconnected" in t \
            or "connectionerror" in t or "name or service not known" in t:
        return "connection failed"
    return None


def translate(exc: BaseException, endpoint: Endpoint, op: str) -> AipmError:
    """Turn an mlflow/requests/JSON failure into one clear, credential-free AipmError."""
    if isinstance(exc, AipmError):
        return exc
    code = getattr(exc, "error_code", None)
    msg = scrub_text(_first_line(getattr(exc, "message", None) or str(exc)))
    if code == "RESOURCE_DOES_NOT_EXIST":
        return RunNotFoundError(f"MLflow at {endpoint.safe}: {op}: {msg}")
    if isinstance(exc, json.JSONDecodeError) or "not in a valid json format" in msg.lower():
        msg = msg.split("Response body:", 1)[-1].strip() if "Response body:" in msg else msg
        return BackendError(f"MLflow server at {endpoint.safe} answered {op} with a response "
                            f"that is not valid JSON: {msg[:120]}")
    if endpoint.is_http:
        cause = _transport_cause(str(exc))
        if cause is not None:
            return BackendError(f"MLflow server at {endpoint.safe} did not answer after "
                                f"{tries()} tries ({op}): {cause}")
        if "response body" in msg.lower() and "!= 200" in msg:
            return BackendError(f"MLflow server at {endpoint.safe} failed {op}: {msg}")
    if code == "INVALID_PARAMETER_VALUE" and op.startswith("search"):
        return UsageError(f"MLflow rejected the filter ({op}): {msg}")
    where = f"server at {endpoint.safe}" if endpoint.is_http else f"store {endpoint.safe}"
    return BackendError(f"MLflow {where} failed {op}: {msg}")


@contextmanager
def guard(endpoint: Endpoint, op: str) -> Iterator[None]:
    """Run mlflow calls; any failure leaves as one :func:`translate`-d AipmError."""
    try:
        yield
    except AipmError:
        raise
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - mlflow, requests, sqlalchemy, json all end here
        # the cause is shown by AIPM_DEBUG=1's traceback: never with a URL's credentials
        raise translate(e, endpoint, op) from _scrubbed_cause(e)


def extra(options: BackendOptions, key: str, default: Any = None) -> Any:
    """``options.extra[key]`` (the CLI/API's free-form backend options)."""
    return options.extra.get(key, default) if options.extra else default
