"""What the tests share: a real server in a process or in-process, real clients, real databases.

- ``helpers``: settings for fast tests, a WebSocket client, server processes, waiting for events.
- ``rawws``: a raw-socket WebSocket client for hostile input.
- ``tcpproxy``: a loopback TCP proxy that can drop or stall traffic (store outages).
- ``ferretdb``: starting FerretDB, the MongoDB-compatible server of the store tests.
- ``browser``: Playwright with Debian's Chromium.
- ``auth_helpers``, ``auth_plugins``: credentials, a JWKS server, and example auth plugins.
- ``clock``: a clock the tests move by hand.
"""
