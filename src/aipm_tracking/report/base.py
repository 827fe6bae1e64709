"""What a reporter is: a named function turning a :class:`Comparison` into text.

Built-in formats (``table``, ``markdown``, ``json``, ``junit``, ``html``) and plugin formats are
registered through ``aipm_register_reporters(register)``; ``--format NAME`` picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..schema import Comparison


@dataclass(frozen=True)
class ReportOptions:
    """Rendering options: ``width`` for terminals, ``color`` for ANSI output."""

    width: int = 100
    color: bool = False


Reporter = Callable[[Comparison, ReportOptions], str]
