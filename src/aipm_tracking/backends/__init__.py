"""Backends: the embedded store (``local``) and the protocol plugins implement."""

from .base import Backend, BackendFactory, BackendOptions, BaseBackend

__all__ = ["Backend", "BackendFactory", "BackendOptions", "BaseBackend"]
