"""The ``aipm`` command line: a click group whose commands load lazily.

Importing this module imports click and nothing heavy: each command lives in
``aipm_tracking.commands.<module>`` and is imported only when named (or listed by
``--help``); those modules import their work (pandas, backends ...) inside the command
body. Plugins are loaded when a command runs, never at import.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import warnings
from typing import Any

import click

#: command name -> "module:attribute" under aipm_tracking.commands
LAZY_COMMANDS: dict[str, str] = {
    "log": "log:log_cmd",
    "runs": "runs:runs_group",
    "compare": "compare:compare_cmd",
    "guardrails": "guardrails:guardrails_group",
    "push": "transfer:push_cmd",
    "pull": "transfer:pull_cmd",
    "plugins": "info:plugins_cmd",
    "metrics": "info:metrics_cmd",
    "demo": "demo:demo_cmd",
    "thresholds": "thresholds:thresholds_cmd",
    "sync": "sync:sync_cmd",
    "report": "report:report_cmd",
}

#: Exit status of an unexpected exception (a bug in aipm or a plugin): not 1, which
#: ``aipm compare`` reserves for a blocking regression (DESIGN §6, §11).
INTERNAL_ERROR = 4


class LazyGroup(click.Group):
    """A group that imports a command's module only when the command is needed."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self._plugins_loaded = False

    def _load_plugin_commands(self) -> None:
        if self._plugins_loaded or os.environ.get("_AIPM_NO_PLUGIN_COMMANDS"):
            return
        self._plugins_loaded = True
        from .plugins import add_plugin_commands

        for name in self.lazy:  # built-ins win name collisions
            if name not in self.commands:
                try:
                    self.commands[name] = self._import(name)
                except ImportError as e:  # a broken install must not break every command
                    warnings.warn(f"command '{name}' unavailable: {e}", stacklevel=2)
        add_plugin_commands(self)

    def _import(self, name: str) -> click.Command:
        mod, _, attr = self.lazy[name].partition(":")
        cmd = getattr(importlib.import_module(f"aipm_tracking.commands.{mod}"), attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return sorted(self.commands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name in self.lazy:
            cmd = self._import(cmd_name)
            self.commands[cmd_name] = cmd
            return cmd
        self._load_plugin_commands()
        return self.commands.get(cmd_name)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aipm-tracking")
    except PackageNotFoundError:  # pragma: no cover - source tree
        return "0+unknown"


@click.group(cls=LazyGroup, lazy=LAZY_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(version=None, package_name="aipm-tracking", prog_name="aipm",
                      message="%(prog)s %(version)s")
@click.option("--store", envvar="AIPM_STORE", metavar="DIR",
              help="Embedded store directory (default ./.aipm, or $AIPM_STORE).")
@click.option("--mlflow-uri", envvar="MLFLOW_TRACKING_URI", metavar="URI",
              help="MLflow tracking URI (sqlite:///… or http://…); default $MLFLOW_TRACKING_URI.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or notes on stderr.")
@click.pass_context
def cli(ctx: click.Context, store: str | None, mlflow_uri: str | None, quiet: bool) -> None:
    """aipm: AI-PM metrics, guardrails fixed before training, and a regression gate for CI.

    \b
    Quick start:
      aipm demo                                   # see a regression caught, no set-up
      aipm log eval.parquet --model bot --model-version 2 --guardrails g.yaml
      aipm compare BASELINE CANDIDATE --guardrails g.yaml

    Exit codes of 'compare': 0 pass, 1 blocking regression, 2 usage error, 3 inconclusive,
    4 internal error (a bug; AIPM_DEBUG=1 shows the traceback).
    """
    from .context import CliState

    ctx.obj = CliState(store=store, mlflow_uri=mlflow_uri, quiet=quiet)


def _show_warning(message: Any, category: Any, filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    from .errors import AipmWarning

    if isinstance(category, type) and issubclass(category, AipmWarning):
        click.echo(f"aipm: warning: {message}", err=True)
    else:  # pragma: no cover - other libraries' warnings keep their format
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _command_path(argv: list[str] | None) -> str:
    """``aipm runs list`` for ``argv`` = ``["--store", "d", "runs", "list", ...]``: the
    command a click usage error without a context belongs to (a parser error, such as an
    option missing its value, carries none). Walks the group tree, skipping group options."""
    args = list(sys.argv[1:] if argv is None else argv)
    path, i = ["aipm"], 0
    cmd: click.Command = cli
    try:
        while isinstance(cmd, click.Group) and i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                break
            if arg.startswith("-"):
                takes_value = any(
                    isinstance(p, click.Option) and not p.is_flag and p.nargs > 0
                    and arg in (*p.opts, *p.secondary_opts) for p in cmd.params)
                i += 1 if takes_value else 0
                continue
            sub = cmd.get_command(click.Context(cmd), arg)
            if sub is None:
                break
            path.append(arg)
            cmd = sub
    except Exception:  # noqa: BLE001 - only a hint: never let it hide the error itself
        pass
    return " ".join(path)


def _usage_line(e: click.UsageError, argv: list[str] | None) -> str:
    """A click usage error as one line (DESIGN §6: bad input is one clear line, exit 2):
    ``invalid value for '--seed': -1 is not in the range x>=0 (see 'aipm compare --help')``."""
    msg = " ".join(e.format_message().split()).rstrip(".")
    if msg[:1].isupper() and msg[1:2].islower():  # click's "Invalid value" -> aipm's style
        msg = msg[0].lower() + msg[1:]
    where = e.ctx.command_path if e.ctx is not None else _command_path(argv)
    return f"{msg} (see '{where} --help')"


class _PipeSafeStdout:
    """``sys.stdout`` for a reader that may stop early (``aipm compare ... | head -3``).

    Click turns a broken pipe into exit 1, which DESIGN §6 reserves for a blocking
    regression: a passing comparison piped into ``head`` read as a failed gate. Once the
    reader is gone, the rest of the output is discarded (the descriptor is pointed at
    ``os.devnull``, so the interpreter's last flush does not fail either) and the command
    finishes with its own exit code."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._gone = False

    def _closed(self) -> None:
        self._gone = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):  # not a real descriptor
            pass

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return int(self._stream.write(text))
            except BrokenPipeError:
                self._closed()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._closed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: AipmError -> one line on stderr + its exit code; any other
    exception (a bug) -> one line and exit :data:`INTERNAL_ERROR` (with ``AIPM_DEBUG`` set,
    the traceback), so CI never reads a crash as exit 1, a blocking regression."""
    from .errors import AipmError

    warnings.showwarning = _show_warning
    if sys.stdout is not None and not isinstance(sys.stdout, _PipeSafeStdout):
        sys.stdout = _PipeSafeStdout(sys.stdout)  # type: ignore[assignment]
    debug = os.environ.get("AIPM_DEBUG", "") not in ("", "0")
    try:
        rv = cli.main(args=argv, prog_name="aipm", standalone_mode=False)
    except AipmError as e:
        if debug:
            raise
        click.echo(f"aipm: error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aipm: aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        if isinstance(e, getattr(click.exceptions, "NoArgsIsHelpError", ())):
            e.show()  # 'aipm' / 'aipm runs' with nothing after: the help, as click shows it
        else:
            click.echo(f"aipm: error: {_usage_line(e, argv)}", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
    except OSError as e:
        if debug:
            raise
        click.echo(f"aipm: error: {e}", err=True)
        sys.exit(2)
    except Exception as e:  # a bug, not a verdict: never exit 1 (a blocking regression)
        if debug:
            traceback.print_exc()
        else:
            msg = " ".join(str(e).split())  # one line
            click.echo(f"aipm: internal error: {type(e).__name__}: {msg} "
                       "(set AIPM_DEBUG=1 for the traceback)", err=True)
        sys.exit(INTERNAL_ERROR)
    sys.exit(rv if isinstance(rv, int) else 0)
