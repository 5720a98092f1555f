"""xAPI: each ended study session as an xAPI statement, for a school's Learning Record Store.

``statements.py`` builds a statement from a study record (pure);
``forwarder.py`` delivers them from the store's outbox. See docs/xapi.md.
"""
