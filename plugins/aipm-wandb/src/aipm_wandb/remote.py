"""Reading runs from a W&B server with ``wandb.Api`` (the real public API).

* the server is ``$WANDB_BASE_URL`` (or ``BackendOptions.extra["base_url"]``); the key comes
  from ``$WANDB_API_KEY`` / netrc exactly as wandb finds it;
* wandb 0.31 sends the public API's requests through its Go sidecar (wandb-core), whose
  retry client waits on a 429 for its ``Retry-After`` header and retries 5xx with
  exponential backoff (about 2, 4, 8 ... s). We bound the number of retries with
  ``x_graphql_retry_max`` (``extra["retry_max"]`` or ``AIPM_WANDB_RETRY_MAX``, default 6)
  and also pass the wait min/max settings (measured on 0.31: the retry count is honoured,
  the 5xx backoff starts at ~2 s regardless); a final failure is one BackendError line;
* full history through ``run.scan_history`` (all rows, paged); logged tables from their
  ``run_table`` artifacts (entry ``KEY.table.json``, downloaded to a temporary directory;
  the version the summary's table ref names, else the newest), else from the table JSON
  stored as a run file; the aipm files (``aipm/run.json``, ``aipm/examples.parquet``);
  run listing paged with ``api.runs(path, per_page=…)`` and a rich progress bar on a TTY;
* error messages carry wandb's own text with every URL and secret masked
  (:mod:`aipm_wandb.scrub`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Generator, Mapping
from typing import Any

from aipm_tracking.errors import BackendError, DataError, RunNotFoundError

from .scrub import error_line, remember_secret, remember_url, scrub_message

DEFAULT_RETRY_MAX = 6
DEFAULT_WAIT_MIN_S = 1.0
DEFAULT_WAIT_MAX_S = 60.0


def _retry_settings(extra: Mapping[str, Any]) -> dict[str, Any]:
    def pick(key: str, env: str, default: float) -> float:
        v = extra.get(key, os.environ.get(env))
        return default if v in (None, "") else float(v)

    return {
        "x_graphql_retry_max": int(pick("retry_max", "AIPM_WANDB_RETRY_MAX", DEFAULT_RETRY_MAX)),
        "x_graphql_retry_wait_min_seconds": pick("retry_wait_min_s", "AIPM_WANDB_RETRY_WAIT_MIN_S",
                                                 DEFAULT_WAIT_MIN_S),
        "x_graphql_retry_wait_max_seconds": pick("retry_wait_max_s", "AIPM_WANDB_RETRY_WAIT_MAX_S",
                                                 DEFAULT_WAIT_MAX_S),
    }


def base_url(extra: Mapping[str, Any]) -> str | None:
    return extra.get("base_url") or os.environ.get("WANDB_BASE_URL") or None


def make_api(extra: Mapping[str, Any]) -> Any:
    """A ``wandb.Api`` with bounded retries; BackendError (no secrets) when login fails."""
    import wandb
    from wandb.sdk import wandb_setup

    url = base_url(extra)
    remember_url(url)  # its credentials are masked in every later message
    overrides = {"base_url": url} if url else None
    glob = wandb_setup.singleton().settings
    wanted = _retry_settings(extra)
    saved = {k: getattr(glob, k) for k in wanted}
    try:
        for k, v in wanted.items():  # Api copies the global settings at construction
            setattr(glob, k, v)
        api = wandb.Api(overrides=overrides, timeout=int(extra.get("timeout_s", 60)))
    except Exception as e:  # noqa: BLE001
        raise _fail(f"cannot connect to W&B at {url or 'the default server'}", e, url) from None
    finally:
        for k, v in saved.items():
            setattr(glob, k, v)
    try:
        remember_secret(getattr(api, "api_key", None))  # as wandb resolved it (env, netrc)
    except Exception:  # noqa: BLE001 - only a better mask; never a reason to fail
        pass
    return api


def _fail(what: str, e: BaseException, *urls: str | None) -> BackendError:
    """``BackendError("WHAT: <first line of e>")``, the whole text scrubbed: wandb repeats
    the configured URL (credentials included) and request details in its messages."""
    return BackendError(scrub_message(f"{what}: {error_line(e, *urls)}", *urls))


def _is_not_found(e: BaseException) -> bool:
    t = str(e).lower()
    return "could not find run" in t or "not found" in t


def get_run(api: Any, path: str) -> Any:
    try:
        return api.run(path)
    except Exception as e:  # noqa: BLE001 - wandb.errors.CommError and friends
        if _is_not_found(e):
            raise RunNotFoundError(f"W&B run '{path}' not found") from None
        raise _fail(f"W&B request for run '{path}' failed", e) from None


def download(run: Any, name: str) -> bytes | None:
    """Bytes of the run file ``name``; None when the run has no such file."""
    try:
        f = run.file(name)
        if not getattr(f, "url", None) and not getattr(f, "size", 0):
            return None
        with tempfile.TemporaryDirectory(prefix="aipm-wandb-") as tmp:
            fh = f.download(root=tmp, replace=True)
            fh.close()
            with open(fh.name, "rb") as bf:
                return bf.read()
    except Exception as e:  # noqa: BLE001
        text = str(e).lower()
        # wandb's run.file(name) indexes an empty result list when the file is absent
        if (_is_not_found(e) or "no file" in text or "list index out of range" in text
                or isinstance(e, (KeyError, IndexError))):
            return None
        raise _fail(f"W&B download of '{name}' from run '{run.id}' failed", e) from None


def run_files(run: Any) -> set[str]:
    try:
        return {f.name for f in run.files()}
    except Exception as e:  # noqa: BLE001
        raise _fail(f"W&B file listing of run '{run.id}' failed", e) from None


def _version_no(art: Any) -> int:
    """The artifact's version index (``v3`` -> 3); -1 when it says none."""
    import re

    texts: list[str] = []
    try:
        texts.append(str(art.version))
    except Exception:  # noqa: BLE001 - an artifact object without a logged version
        pass
    texts.append(str(getattr(art, "name", "")).rpartition(":")[2])
    for text in texts:
        m = re.fullmatch(r"v(\d+)", text)
        if m:
            return int(m.group(1))
    return -1


def _ref_artifact_id(ref: Mapping[str, Any]) -> str | None:
    """The server artifact id in a table ref's ``artifact_path`` (``wandb-artifact://ID/…``)."""
    path = str(ref.get("artifact_path") or "")
    if path.startswith("wandb-artifact://"):
        return path[len("wandb-artifact://"):].split("/", 1)[0].split(":", 1)[0] or None
    return None


def _artifact_table(run: Any, key: str, ref: Mapping[str, Any] | None = None) -> Any:
    """The table logged under ``key`` from the run's ``run_table`` artifact, or None.

    W&B names the artifact ``run-RUNID-KEY`` (KEY stripped of characters such as ``/``,
    wandb >= 0.2x may append a suffix) and the entry ``KEY.table.json``; each
    ``run.log`` of the key adds a version. The version read is the one the summary's table
    ref (``ref``) names: the artifact its ``artifact_path`` names, else the version whose
    entry has the ref's ``sha256`` (newest first); a ref naming neither takes the newest
    version (highest version index), whatever order the server lists them in. None when no
    version matches: the caller reads the run file the ref names.

    A version whose manifest entry has another size than the ref's ``size`` is skipped
    without downloading it (the manifest is fetched anyway to find the entry); the manifest
    digest is an MD5, so versions of the same size are still downloaded to check sha256.
    """
    import hashlib
    import re

    from .offline import table_json_to_frame

    ref = ref or {}
    entry = f"{key}.table.json"
    prefix = f"run-{run.id}-{re.sub(r'[^A-Za-z0-9_.-]', '', key)}"
    try:
        arts = [a for a in run.logged_artifacts() if getattr(a, "type", "") == "run_table"]
    except Exception as e:  # noqa: BLE001
        raise _fail(f"W&B artifact listing of run '{run.id}' failed", e) from None
    cands = [a for a in arts if str(a.name).split(":")[0].startswith(prefix)]
    cands.sort(key=_version_no, reverse=True)  # newest first
    want_id = _ref_artifact_id(ref)
    if want_id:  # the named artifact first (a stable sort keeps the rest newest first)
        cands.sort(key=lambda a: str(getattr(a, "id", "")) != want_id)
    want_sha = str(ref.get("sha256") or "").lower()
    want_size = ref.get("size") if want_sha else None
    for art in cands:
        try:
            found = art.manifest.entries.get(entry)
            if found is None:
                continue
            size = getattr(found, "size", None)
            if isinstance(want_size, int) and isinstance(size, int) and size != want_size:
                continue  # its sha256 cannot match either: not downloaded
            with tempfile.TemporaryDirectory(prefix="aipm-wandb-") as tmp:
                # never wandb's default ./artifacts in the working directory
                path = art.get_entry(entry).download(root=tmp)
                with open(path, "rb") as fh:
                    data = fh.read()
            if want_sha and hashlib.sha256(data).hexdigest() != want_sha:
                continue  # another version than the one the summary references
            doc = json.loads(data)
        except Exception as e:  # noqa: BLE001
            raise _fail(f"W&B artifact '{art.name}' of run '{run.id}' could not be read",
                        e) from None
        return table_json_to_frame(doc, f"{art.name}/{entry}")
    return None


def read_table(run: Any, key: str, ref: Mapping[str, Any]) -> Any:
    """A logged table -> DataFrame: from its ``run_table`` artifact (the version ``ref``
    names), else the run file ``ref["path"]``."""
    from .offline import table_json_to_frame

    df = _artifact_table(run, key, ref)
    if df is not None:
        return df
    path = str(ref.get("path") or "")
    data = download(run, path) if path else None
    if data is None:
        raise DataError(f"W&B run '{run.id}' has no table file '{path}'")
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise DataError(f"W&B table file '{path}' of run '{run.id}' is not JSON: {e}") from None
    return table_json_to_frame(doc, path)


def scan_history(run: Any, page_size: int = 1000) -> list[dict[str, Any]]:
    try:
        return list(run.scan_history(page_size=page_size))
    except Exception as e:  # noqa: BLE001
        raise _fail(f"W&B history of run '{run.id}' could not be read", e) from None


def find_copy(api: Any, path: str, source_ref: str, tag: str, run_json: str) -> str | None:
    """``wandb:ENTITY/PROJECT/ID`` of a complete copy of ``source_ref`` in ``path``
    (``ENTITY/PROJECT`` or ``PROJECT``): a finished run tagged ``tag`` whose config names
    ``source_ref`` and that holds ``run_json`` (written last); newest first; None if none."""
    from .convert import copy_source

    try:
        runs = api.runs(path, filters={"tags": {"$in": [tag]}}, order="-created_at",
                        per_page=50)
        for run in runs:
            if (copy_source(dict(run.config or {})) == source_ref
                    and str(getattr(run, "state", "")) == "finished"
                    and run_json in run_files(run)):
                return f"wandb:{run.entity}/{run.project}/{run.id}"
    except BackendError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _fail(f"W&B search for a copy of '{source_ref}' in '{path}' failed", e) from None
    return None


def iter_runs(api: Any, path: str, *, filters: dict[str, Any] | None, per_page: int,
              limit: int | None, quiet: bool) -> Generator[Any, None, None]:
    """Runs of ``ENTITY/PROJECT``, newest first, paged; a progress bar on a TTY."""
    try:
        runs = api.runs(path, filters=filters or {}, order="-created_at", per_page=per_page,
                        lazy=False)
        total = len(runs)
    except Exception as e:  # noqa: BLE001
        raise _fail(f"W&B run listing of '{path}' failed", e) from None
    if limit is not None:
        total = min(total, limit)
    show = not quiet and sys.stderr.isatty() and total > 0
    progress = None
    task = None
    if show:
        from rich.console import Console
        from rich.progress import Progress

        progress = Progress(console=Console(stderr=True), transient=True)
        progress.start()
        task = progress.add_task(f"W&B {path}", total=total)
    n = 0
    try:
        it = iter(runs)
        while limit is None or n < limit:
            try:
                run = next(it)
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001
                raise _fail(f"W&B run listing of '{path}' failed", e) from None
            n += 1
            if progress is not None and task is not None:
                progress.advance(task)
            yield run
    finally:
        if progress is not None:
            progress.stop()
