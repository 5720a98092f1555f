"""The counting rules of study-time, as plain Python.

Nothing in this package does I/O or reads a clock: every operation takes the
current server time as an argument. The WebSocket handler translates socket
events into calls on :class:`~tracking.tracker.Tracker`, the storage layer
persists the :class:`~tracking.session.SessionRecord` snapshots it produces,
and the tests drive it with a fake clock.
"""
