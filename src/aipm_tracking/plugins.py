"""The only module that touches the PluginManager.

Built-ins are loaded by the same path as third-party plugins: each name in
``DEFAULT_PLUGINS`` is imported and registered, then every entry point of the
``aipm_tracking`` group. A plugin that fails to load is a warning naming it, never a
crash; ``AIPM_DISABLE_PLUGINS=a,b`` blocks plugins by name; ``check_pending`` rejects
hookimpls that match no spec. Nothing here runs at import time.
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import AipmWarning, PluginError, UsageError
from .metrics import BUILTIN_METRICS, MetricDef, MetricRegistry

if TYPE_CHECKING:  # pragma: no cover
    from .backends.base import Backend, BackendFactory, BackendOptions
    from .report.base import Reporter

#: Built-in plugins, registered exactly like entry points.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "aipm_tracking.backends.local",
    "aipm_tracking.report.builtin",
)
ENTRY_POINT_GROUP = hookspecs.PROJECT


@dataclass
class PluginInfo:
    """What ``aipm plugins`` lists."""

    name: str
    version: str
    source: str  # "builtin" or the distribution name
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "source": self.source,
                "hooks": self.hooks, "error": self.error}


def disabled_plugins() -> set[str]:
    raw = os.environ.get("AIPM_DISABLE_PLUGINS", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


class _Host:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: list[PluginInfo] = []
        self._warned: set[str] = set()
        #: (what, name) -> the plugins that all registered it (none of them is used)
        self.conflicts: dict[tuple[str, str], tuple[str, str]] = {}
        self._load()

    def _warn(self, msg: str) -> None:
        warnings.warn(msg, AipmWarning, stacklevel=3)

    def _conflict(self, plugin: str, msg: str) -> None:
        """A name two plugins claim: warn once, and show it against ``plugin`` in
        ``aipm plugins``."""
        if msg in self._warned:
            return
        self._warned.add(msg)
        for info in self.infos:
            if info.name == plugin:
                info.error = f"{info.error}; {msg}" if info.error else msg
        self._warn(msg)

    def _register(self, plugin: object, name: str, version: str, source: str) -> None:
        try:
            self.pm.register(plugin, name=name)
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break aipm
            self.infos.append(PluginInfo(name, version, source, error=str(e)))
            self._warn(f"plugin '{name}' could not be registered: {e}")
            return
        hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        self.infos.append(PluginInfo(name, version, source, hooks))

    def _load(self) -> None:
        from importlib.metadata import entry_points, version

        blocked = disabled_plugins()
        try:
            core_version = version("aipm-tracking")
        except Exception:  # noqa: BLE001 - running from a source tree
            core_version = "0+unknown"
        for modname in DEFAULT_PLUGINS:
            short = modname.rsplit(".", 1)[-1]
            if modname in blocked or short in blocked:
                continue
            try:
                mod = importlib.import_module(modname)
            except Exception as e:  # noqa: BLE001 - same rule as third-party plugins
                self.infos.append(PluginInfo(modname, core_version, "builtin",
                                             error=f"{type(e).__name__}: {e}"))
                self._warn(f"plugin '{modname}' failed to load: {type(e).__name__}: {e}")
                continue
            self._register(mod, modname, core_version, "builtin")
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in blocked:
                continue
            dist = getattr(ep, "dist", None)
            dist_name = getattr(dist, "name", None) or "?"
            dist_version = getattr(dist, "version", None) or "?"
            try:
                plugin = ep.load()
            except Exception as e:  # noqa: BLE001
                self.infos.append(PluginInfo(ep.name, dist_version, dist_name,
                                             error=f"{type(e).__name__}: {e}"))
                self._warn(f"plugin '{ep.name}' ({dist_name}) failed to load: "
                           f"{type(e).__name__}: {e}")
                continue
            self._register(plugin, ep.name, dist_version, dist_name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as e:
            bad = getattr(e, "plugin", None)
            name = self.pm.get_name(bad) if bad is not None else "?"
            if bad is not None:
                self.pm.unregister(bad)
            for info in self.infos:
                if info.name == name:
                    info.error, info.hooks = str(e), []
            self._warn(f"plugin '{name}' disabled: {e}")

    # -- contributions ---------------------------------------------------------------
    def _collect(self, hook: Any, what: str) -> dict[str, tuple[str, Any]]:
        """Call a register-callback hook plugin by plugin; return name -> (plugin, value).

        A name two plugins register is a warning naming both, never a crash of every
        command: a built-in keeps its name; between two third-party plugins neither gets it
        (using it is then an error naming both, see :func:`get_backend`)."""
        out: dict[str, tuple[str, Any]] = {}
        for impl in hook.get_hookimpls():
            pname = impl.plugin_name

            def register(name: str, value: Any, _p: str = pname) -> None:
                first = out.get(name, (None, None))[0] or self.conflicts.get(
                    (what, name), (None, None))[0]
                if first is None or first == _p:
                    out[name] = (_p, value)
                elif first in DEFAULT_PLUGINS:
                    self._conflict(_p, f"plugin '{_p}' registers {what} '{name}', which is "
                                       f"built in ('{first}'): not replaced")
                else:
                    out.pop(name, None)
                    self.conflicts[(what, name)] = (first, _p)
                    self._conflict(_p, f"{what} '{name}' registered by both '{first}' and "
                                       f"'{_p}': neither is used (uninstall one, or block "
                                       f"one with AIPM_DISABLE_PLUGINS)")

            try:
                impl.function(register)
            except PluginError:
                raise
            except Exception as e:  # noqa: BLE001
                self._warn(f"plugin '{pname}' failed in {hook.name}: {type(e).__name__}: {e}")
        return out

    @property
    def backends(self) -> dict[str, BackendFactory]:
        got = self._collect(self.pm.hook.aipm_register_backends, "backend")
        return {k: v for k, (_p, v) in got.items()}

    @property
    def reporters(self) -> dict[str, Reporter]:
        got = self._collect(self.pm.hook.aipm_register_reporters, "report format")
        return {k: v for k, (_p, v) in got.items()}

    def metrics(self) -> MetricRegistry:
        reg = MetricRegistry(BUILTIN_METRICS)
        for impl in self.pm.hook.aipm_register_metrics.get_hookimpls():
            pname = impl.plugin_name

            def register(d: MetricDef, _p: str = pname) -> None:
                if d.source == "aipm" and _p not in DEFAULT_PLUGINS:
                    d = MetricDef(d.name, d.direction, d.unit, d.doc, d.kind, source=_p)
                try:
                    reg.register(d)
                except PluginError as e:  # the first definition stays (built-ins first)
                    self._conflict(_p, f"{e}: the first definition is used")

            try:
                impl.function(register)
            except PluginError:
                raise
            except Exception as e:  # noqa: BLE001
                self._warn(f"plugin '{pname}' failed in aipm_register_metrics: {e}")
        return reg

    def call_event(self, name: str, **kwargs: Any) -> None:
        """Call an event hook; an implementation that raises becomes a warning."""
        hook = getattr(self.pm.hook, name)
        for impl in hook.get_hookimpls():
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as e:  # noqa: BLE001
                self._warn(f"plugin '{impl.plugin_name}' failed in {name}: "
                           f"{type(e).__name__}: {e}")


@lru_cache(maxsize=1)
def host() -> _Host:
    """The process-wide plugin host (loaded on first use)."""
    return _Host()


def reset() -> None:
    """Forget the loaded plugins (tests, or after changing ``AIPM_DISABLE_PLUGINS``)."""
    host.cache_clear()
    metric_registry.cache_clear()


def get_plugin_manager() -> pluggy.PluginManager:
    return host().pm


def plugin_infos() -> list[PluginInfo]:
    """What loaded, with the conflicts found when collecting every contribution."""
    h = host()
    h.backends, h.reporters, metric_registry()  # noqa: B018 - collecting notes conflicts
    return list(h.infos)


@lru_cache(maxsize=1)
def metric_registry() -> MetricRegistry:
    """Built-in metrics plus every plugin's."""
    return host().metrics()


def backend_schemes() -> list[str]:
    return sorted(host().backends)


#: Backend schemes of this project's own plugins, and the distribution that provides each.
_KNOWN_PLUGINS = {"mlflow": "aipm-mlflow", "wandb": "aipm-wandb"}


def get_backend(scheme: str, options: BackendOptions | None = None) -> Backend:
    """Instantiate the backend registered for ``scheme``."""
    from .backends.base import BackendOptions

    factories = host().backends
    factory = factories.get(scheme)
    both = host().conflicts.get(("backend", scheme))
    if factory is None and both:
        raise PluginError(f"backend '{scheme}:' is registered by both '{both[0]}' and "
                          f"'{both[1]}': uninstall one, or block one with AIPM_DISABLE_PLUGINS")
    if factory is None:
        known = ", ".join(sorted(factories)) or "none"
        dist = _KNOWN_PLUGINS.get(scheme)
        failed = next((i.error for i in host().infos if i.name == scheme and i.error), None)
        if scheme in disabled_plugins():
            hint = f"its plugin '{scheme}' is blocked by AIPM_DISABLE_PLUGINS"
        elif failed:
            hint = f"its plugin '{scheme}' failed to load ({failed}); see 'aipm plugins'"
        elif dist:
            hint = f"install its plugin: pip install {dist}"
        else:
            hint = "is the plugin installed? see 'aipm plugins'"
        raise UsageError(f"no backend for scheme '{scheme}:' (installed: {known}); {hint}")
    return factory(options or BackendOptions())


def get_reporter(name: str) -> Reporter:
    reps = host().reporters
    both = host().conflicts.get(("report format", name))
    if name not in reps and both:
        raise PluginError(f"report format '{name}' is registered by both '{both[0]}' and "
                          f"'{both[1]}': uninstall one, or block one with AIPM_DISABLE_PLUGINS")
    if name not in reps:
        raise UsageError(f"unknown format '{name}' (known: {', '.join(sorted(reps))})")
    return reps[name]


def reporter_names() -> list[str]:
    return sorted(host().reporters)


def add_plugin_commands(cli: Any) -> None:
    """Let plugins add CLI commands (called when the CLI runs, never at import)."""
    h = host()
    for impl in h.pm.hook.aipm_register_commands.get_hookimpls():
        before = dict(cli.commands)
        try:
            impl.function(cli=cli)
        except Exception as e:  # noqa: BLE001
            h._warn(f"plugin '{impl.plugin_name}' failed in aipm_register_commands: {e}")
        for name, cmd in before.items():  # the host owns name collisions
            if cli.commands.get(name) is not cmd:
                cli.commands[name] = cmd
                h._warn(f"plugin '{impl.plugin_name}' tried to replace command '{name}'; ignored")


def emit(event: str, **kwargs: Any) -> None:
    """Fire an event hook (``aipm_comparison_done``, ``aipm_run_logged``)."""
    host().call_event(event, **kwargs)

