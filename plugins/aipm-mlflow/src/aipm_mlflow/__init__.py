"""aipm-mlflow: the MLflow backend plugin of aipm-tracking.

References ``mlflow:RUN_ID`` and destinations ``mlflow:EXPERIMENT`` are served by
:class:`aipm_mlflow.backend.MlflowBackend`, registered through the ``aipm_tracking`` entry
point (:mod:`aipm_mlflow.plugin`). Importing this package does not import mlflow.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
