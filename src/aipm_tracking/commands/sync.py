"""``aipm sync``: deliver what a killed or disconnected Tracker left in its spool."""

from __future__ import annotations

import click

from ._common import state


@click.command("sync")
@click.option("--spool-dir", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Spool directory (default $AIPM_SPOOL_DIR, else <store>/spool).")
@click.option("--keep", is_flag=True, help="Keep spool files after delivering them.")
@click.option("--mlflow-uri", "mlflow_uri", default=None, metavar="URI",
              help="Deliver MLflow spools to this tracking server instead of the one each "
                   "spool recorded (a moved server, a mistyped URI).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def sync_cmd(ctx: click.Context, spool_dir: str | None, keep: bool, mlflow_uri: str | None,
             fmt: str) -> None:
    """Replay Tracker spools into their backends (idempotent; live Trackers are skipped).

    Each spool names its own backend and store. Points already acknowledged are not sent
    again; a torn last record (a kill mid-write) is detected by its checksum and dropped.
    A run whose Tracker never finished is recorded as 'killed'. An MLflow spool goes to the
    server it recorded (a URI with credentials is never recorded: then $MLFLOW_TRACKING_URI
    or the global --mlflow-uri), unless this command's --mlflow-uri names another. Exit code
    1 when a spool could not be delivered (it stays for the next try).

    \b
    Example:
      aipm sync --spool-dir ./.aipm/spool
    """
    import json
    import os

    from ..errors import UsageError
    from ..spool import default_spool_dir, replay_all

    st = state(ctx)
    directory = spool_dir or str(default_spool_dir(st.store))
    if spool_dir and not os.path.isdir(spool_dir):
        raise UsageError(f"{spool_dir}: no such spool directory")
    opts = st.backend_options()
    results = replay_all(directory, options=opts, keep=keep, mlflow_uri=mlflow_uri)
    if fmt == "json":
        click.echo(json.dumps({"spool_dir": directory,
                               "results": [r.to_dict() for r in results]}, indent=2))
    else:
        if not results:
            click.echo(f"nothing to sync in {directory}")
        for r in results:
            extra = []
            if r.run_status:
                extra.append(f"run {r.run_status}")
            if r.torn:
                extra.append("torn last record dropped")
            if r.corrupt:
                extra.append(f"{r.corrupt} corrupt record(s) dropped")
            if r.reason:
                extra.append(r.reason)
            tail = f" ({'; '.join(extra)})" if extra else ""
            click.echo(f"{r.status:8} {r.ref or '-'}  {r.points} point(s)  {r.spool}{tail}")
    if any(r.status == "failed" for r in results):
        ctx.exit(1)
