"""``aipm plugins`` and ``aipm metrics``: what is installed and what aipm measures."""

from __future__ import annotations

import json

import click

from ._common import console


@click.command("plugins")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
def plugins_cmd(fmt: str) -> None:
    """List loaded plugins (built-ins included): name, version, hooks, errors."""
    from ..plugins import backend_schemes, plugin_infos, reporter_names

    infos = plugin_infos()
    if fmt == "json":
        click.echo(json.dumps({"plugins": [i.to_dict() for i in infos],
                               "backends": backend_schemes(), "formats": reporter_names()},
                              indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("plugin", "version", "source", "hooks / error")
    for i in infos:
        hooks = ", ".join(h.removeprefix("aipm_") for h in i.hooks)
        # Text, not markup: plugin names and error messages are shown verbatim.
        table.add_row(Text(i.name), Text(i.version), Text(i.source),
                      Text(i.error, style="red") if i.error else Text(hooks))
    con = console()
    con.print(table)
    con.print(Text(f"backends: {', '.join(backend_schemes())}   "
                   f"formats: {', '.join(reporter_names())}"))


@click.command("metrics")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
def metrics_cmd(fmt: str) -> None:
    """List the metric registry: canonical names, direction, unit, definition."""
    from ..plugins import metric_registry

    defs = list(metric_registry())
    if fmt == "json":
        click.echo(json.dumps([{"name": d.name, "direction": d.direction, "unit": d.unit,
                                "kind": d.kind, "doc": d.doc, "source": d.source}
                               for d in defs], indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("metric", "better", "unit", "definition")
    for d in defs:
        table.add_row(Text(d.name), Text(d.direction), Text(d.unit), Text(d.doc))
    console().print(table)
    console().print("Per-slice metrics are named like accuracy[slice=de].", markup=False)
