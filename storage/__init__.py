"""Where study records live: the store interface, its implementations, and the write-behind buffer."""

from .base import Store, StoreError, StoreUnavailable

__all__ = ["Store", "StoreError", "StoreUnavailable"]
