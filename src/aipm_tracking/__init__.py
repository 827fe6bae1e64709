"""aipm-tracking: AI-PM metrics, guardrails fixed before training, and a regression gate.

```python
import aipm_tracking as aipm
res = aipm.evaluate(df, fallback_threshold=0.6)
ref = aipm.log(df, model="bot", model_version="2", guardrails="g.yaml")
cmp = aipm.compare("local:abc", ref, guardrails="g.yaml")
```

Public names load lazily (PEP 562) so ``import aipm_tracking`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "evaluate": "api",
    "log": "api",
    "load_run": "api",
    "compare": "api",
    "push": "api",
    "pull": "api",
    "Tracker": "tracker",
    "load_guardrails": "guardrails",
    "Guardrails": "guardrails",
    "Guardrail": "guardrails",
    "RunRecord": "schema",
    "ModelInfo": "schema",
    "DatasetInfo": "schema",
    "MetricValue": "schema",
    "MetricPoint": "schema",
    "EvalResult": "schema",
    "Comparison": "schema",
    "MetricComparison": "schema",
    "MetricDef": "metrics",
    "AipmError": "errors",
    "Pricing": "pricing",
}

__all__ = [
    "__version__", "hookimpl", "evaluate", "log", "load_run", "compare", "push", "pull",
    "Tracker", "load_guardrails", "Guardrails", "Guardrail", "RunRecord", "ModelInfo",
    "DatasetInfo", "MetricValue", "MetricPoint", "EvalResult", "Comparison",
    "MetricComparison", "MetricDef", "AipmError", "Pricing",
]

if TYPE_CHECKING:  # pragma: no cover
    from .api import compare, evaluate, load_run, log, pull, push
    from .errors import AipmError
    from .guardrails import Guardrail, Guardrails, load_guardrails
    from .metrics import MetricDef
    from .pricing import Pricing
    from .schema import (
        Comparison,
        DatasetInfo,
        EvalResult,
        MetricComparison,
        MetricPoint,
        MetricValue,
        ModelInfo,
        RunRecord,
    )
    from .tracker import Tracker


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'aipm_tracking' has no attribute {name!r}")
    value = getattr(import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
