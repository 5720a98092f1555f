"""The counting rules of study-time, as plain Python.

Nothing in this package does I/O or reads a clock: every operation takes the
current server time as an argument. The session core (``service/sessions.py``)
calls :class:`~tracking.tracker.Tracker` for each intent (a session opens, a
heartbeat arrives, a session ends) with the time of its clock, the storage
layer (``storage/writer.py``) persists the
:class:`~tracking.session.SessionRecord` snapshots it produces, and the tests
drive it with a fake clock. It knows no socket, store or handler: the
WebSocket handler never calls it directly.
"""
