"""The plugin contract: every hook aipm calls, typed and documented.

Contributions use the register-callback idiom (the host owns name collisions); events are
plain hooks whose return values are ignored. Built-ins (``aipm_tracking.backends.local``,
``aipm_tracking.report.builtin`` ...) implement these exactly like third-party plugins do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    import click

    from .backends.base import BackendFactory
    from .metrics import MetricDef
    from .report.base import Reporter
    from .schema import Comparison, RunRecord

PROJECT = "aipm_tracking"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def aipm_register_backends(register: Callable[[str, BackendFactory], None]) -> None:
    """Register backends: call ``register(scheme, factory)`` once per backend.

    :param register: takes the reference scheme (``"mlflow"`` for ``mlflow:RUN_ID``) and a
        factory ``(BackendOptions) -> Backend``. The factory is called only when a reference
        with that scheme is used, so a plugin must not import its SDK at registration.
    :return: nothing; every implementation is called. Two plugins registering one scheme
        is a :class:`~aipm_tracking.errors.PluginError` naming both.
    """


@hookspec
def aipm_register_metrics(register: Callable[[MetricDef], None]) -> None:
    """Register metric definitions: call ``register(MetricDef(...))`` per metric.

    :param register: adds a :class:`~aipm_tracking.metrics.MetricDef` (name, direction,
        unit, doc, kind) to the registry used by guardrails, compare and ``aipm metrics``.
    :return: nothing; every implementation is called. A name registered twice with a
        different definition is a :class:`~aipm_tracking.errors.PluginError`.
    """


@hookspec
def aipm_register_reporters(register: Callable[[str, Reporter], None]) -> None:
    """Register output formats: call ``register(name, render)`` per format.

    :param register: takes the ``--format`` name and a function
        ``(Comparison, ReportOptions) -> str``.
    :return: nothing; every implementation is called; a duplicate name is a PluginError.
    """


@hookspec
def aipm_register_commands(cli: click.Group) -> None:
    """Add CLI commands: call ``cli.add_command(cmd)``.

    :param cli: the ``aipm`` click group. Import heavy modules inside the command body,
        never at module import, so ``aipm --help`` stays fast.
    :return: nothing; every implementation is called. A command name already taken is a
        PluginError naming the plugin.
    """


@hookspec
def aipm_comparison_done(comparison: Comparison) -> None:
    """Event: a comparison was computed (e.g. to send a W&B alert when it blocks).

    :param comparison: the finished :class:`~aipm_tracking.schema.Comparison`.
    :return: ignored; every implementation is called. An exception in one implementation
        becomes a warning naming the plugin; the comparison's result is unaffected.
    """


@hookspec
def aipm_run_logged(record: RunRecord, ref: str) -> None:
    """Event: a run was stored by ``aipm log`` / ``aipm.log`` / ``aipm push``.

    :param record: the stored :class:`~aipm_tracking.schema.RunRecord`.
    :param ref: its reference (``local:…``, ``mlflow:…``).
    :return: ignored; every implementation is called; exceptions become warnings.
    """
