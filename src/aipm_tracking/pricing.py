"""LLM pricing: token counts -> ``cost_usd`` (the guardrails file's ``pricing:`` block).

```yaml
pricing:
  input_per_1m_tokens: 0.50     # USD per million input tokens
  output_per_1m_tokens: 1.50    # USD per million output tokens
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pricing:
    """USD per million tokens, for inputs and outputs."""

    input_per_1m_tokens: float = 0.0
    output_per_1m_tokens: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"input_per_1m_tokens": self.input_per_1m_tokens,
                "output_per_1m_tokens": self.output_per_1m_tokens}

    def cost(self, input_tokens: Any, output_tokens: Any) -> Any:
        """Vectorised: arrays (or scalars) of token counts -> USD per example."""
        return (input_tokens * self.input_per_1m_tokens
                + output_tokens * self.output_per_1m_tokens) / 1e6
