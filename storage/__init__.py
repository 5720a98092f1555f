"""Where study records live: the store interface, the backends (one package per kind of store,
chosen by ``backends.py``), the write-behind buffer and the coordination of processes."""

from .base import Store, StoreError, StoreUnavailable

__all__ = ["Store", "StoreError", "StoreUnavailable"]
