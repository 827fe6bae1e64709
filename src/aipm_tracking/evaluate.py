"""Deprecated alias of :mod:`aipm_tracking.evaluation` (kept so older imports keep working).

Import from ``aipm_tracking.evaluation`` instead: importing *this* submodule sets the package
attribute ``aipm_tracking.evaluate`` to the module, which shadows the public function
``aipm_tracking.evaluate()``. No code in the package imports it.
"""

from __future__ import annotations

from .evaluation import *  # noqa: F401,F403
from .evaluation import __all__  # noqa: F401
