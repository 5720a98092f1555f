"""Reports: study time per learner, per course and per day, computed from the study records.

``split`` is the pure arithmetic (how a session's credit falls into a range
and into calendar days), ``params`` the pure parsing of report parameters,
``source`` the query interface each store implements (in its own package,
``storage/sqlite/reports.py`` and ``storage/mongodb/reports.py``), ``service`` the
reports themselves, ``rows`` their JSON and CSV forms. See docs/reports.md.
"""
