"""aipm-wandb: the Weights & Biases backend plugin for aipm-tracking.

References ``wandb:ENTITY/PROJECT/RUN_ID`` (a W&B server) and ``wandb:PATH`` (a local run
directory, offline or synced); targets ``wandb:ENTITY/PROJECT``. Importing this package (or
:mod:`aipm_wandb.plugin`) never imports ``wandb``: the SDK loads only when a backend runs.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: The wandb versions this plugin is tested with (also the distribution's requirement).
SUPPORTED_WANDB = ">=0.31,<0.32"
