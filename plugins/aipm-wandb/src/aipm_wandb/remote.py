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
  ``run_table`` artifacts (entry ``KEY.table.json``, downloaded to a temporary directory),
  else from the table JSON stored as a run
  file; the aipm files (``aipm/run.json``, ``aipm/examples.parquet``); run listing paged with
  ``api.runs(path, per_page=…)`` and a rich progress bar on a TTY.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from aipm_tracking.errors import BackendError, DataError, RunNotFoundError
from aipm_tracking.redact import scrub_url

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
    overrides = {"base_url": url} if url else None
    glob = wandb_setup.singleton().settings
    wanted = _retry_settings(extra)
    saved = {k: getattr(glob, k) for k in wanted}
    try:
        for k, v in wanted.items():  # Api copies the global settings at construction
            setattr(glob, k, v)
        return wandb.Api(overrides=overrides, timeout=int(extra.get("timeout_s", 60)))
    except Exception as e:  # noqa: BLE001
        raise BackendError(f"cannot connect to W&B at {scrub_url(url or 'the default server')}: "
                           f"{_first_line(e)}") from None
    finally:
        for k, v in saved.items():
            setattr(glob, k, v)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _is_not_found(e: BaseException) -> bool:
    t = str(e).lower()
    return "could not find run" in t or "not found" in t


def get_run(api: Any, path: str) -> Any:
    try:
        return api.run(path)
    except Exception as e:  # noqa: BLE001 - wandb.errors.CommError and friends
        if _is_not_found(e):
            raise RunNotFoundError(f"W&B run '{path}' not found") from None
        raise BackendError(f"W&B request for run '{path}' failed: {_first_line(e)}") from None


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
        raise BackendError(f"W&B download of '{name}' from run '{run.id}' failed: "
                           f"{_first_line(e)}") from None


def run_files(run: Any) -> set[str]:
    try:
        return {f.name for f in run.files()}
    except Exception as e:  # noqa: BLE001
        raise BackendError(f"W&B file listing of run '{run.id}' failed: {_first_line(e)}") from None


def _artifact_table(run: Any, key: str) -> Any:
    """The table logged under ``key`` from the run's ``run_table`` artifact, or None.

    W&B names the artifact ``run-RUNID-KEY`` (KEY stripped of characters such as ``/``,
    wandb >= 0.2x may append a suffix) and the entry ``KEY.table.json``.
    """
    import re

    entry = f"{key}.table.json"
    prefix = f"run-{run.id}-{re.sub(r'[^A-Za-z0-9_.-]', '', key)}"
    try:
        arts = [a for a in run.logged_artifacts() if getattr(a, "type", "") == "run_table"]
    except Exception as e:  # noqa: BLE001
        raise BackendError(f"W&B artifact listing of run '{run.id}' failed: "
                           f"{_first_line(e)}") from None
    for art in arts:
        if not str(art.name).split(":")[0].startswith(prefix):
            continue
        from .offline import table_json_to_frame

        try:
            found = entry in art.manifest.entries
            if not found:
                continue
            with tempfile.TemporaryDirectory(prefix="aipm-wandb-") as tmp:
                # never wandb's default ./artifacts in the working directory
                path = art.get_entry(entry).download(root=tmp)
                with open(path, encoding="utf-8") as fh:
                    doc = json.load(fh)
        except Exception as e:  # noqa: BLE001
            raise BackendError(f"W&B artifact '{art.name}' of run '{run.id}' could not be "
                               f"read: {_first_line(e)}") from None
        return table_json_to_frame(doc, f"{art.name}/{entry}")
    return None


def read_table(run: Any, key: str, ref: Mapping[str, Any]) -> Any:
    """A logged table -> DataFrame: from its ``run_table`` artifact, else the run's file."""
    from .offline import table_json_to_frame

    df = _artifact_table(run, key)
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
        raise BackendError(f"W&B history of run '{run.id}' could not be read: "
                           f"{_first_line(e)}") from None


def iter_runs(api: Any, path: str, *, filters: dict[str, Any] | None, per_page: int,
              limit: int | None, quiet: bool) -> Iterator[Any]:
    """Runs of ``ENTITY/PROJECT``, newest first, paged; a progress bar on a TTY."""
    try:
        runs = api.runs(path, filters=filters or {}, order="-created_at", per_page=per_page,
                        lazy=False)
        total = len(runs)
    except Exception as e:  # noqa: BLE001
        raise BackendError(f"W&B run listing of '{path}' failed: {_first_line(e)}") from None
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
                raise BackendError(f"W&B run listing of '{path}' failed: "
                                   f"{_first_line(e)}") from None
            n += 1
            if progress is not None and task is not None:
                progress.advance(task)
            yield run
    finally:
        if progress is not None:
            progress.stop()
