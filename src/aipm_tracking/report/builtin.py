"""The built-in output formats, registered through the plugin hook like any plugin's.

Each renderer module is imported only when its format is used, so loading plugins stays
cheap (rich, xml.etree and the HTML/SVG code load on demand).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..hookspecs import hookimpl
from ..schema import Comparison
from .base import Reporter, ReportOptions

#: format name -> "module:function" under aipm_tracking.report
BUILTIN_FORMATS: dict[str, str] = {
    "table": "table:render_table",
    "markdown": "markdown:render_markdown",
    "json": "json_:render_json",
    "junit": "junit:render_junit",
    "html": "html:render_html",
}


def _lazy(spec: str) -> Reporter:
    mod, _, attr = spec.partition(":")

    def render(cmp: Comparison, opts: ReportOptions) -> str:
        fn: Reporter = getattr(importlib.import_module(f"aipm_tracking.report.{mod}"), attr)
        return fn(cmp, opts)

    render.__name__ = attr
    render.__doc__ = f"Render a Comparison as {mod.rstrip('_')} (imports the renderer lazily)."
    return render


@hookimpl
def aipm_register_reporters(register: Callable[[str, Reporter], None]) -> None:
    """Register table, markdown, json, junit and html."""
    for name, spec in BUILTIN_FORMATS.items():
        register(name, _lazy(spec))
