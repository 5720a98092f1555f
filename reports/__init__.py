"""Reports: study time per learner, per course and per day, computed from the study records.

``split`` is the pure arithmetic (how a session's credit falls into a range
and into calendar days), ``params`` the pure parsing of report parameters,
``source`` the query interface each store implements (in its own package,
``storage/sqlite/reports.py`` and ``storage/mongodb/reports.py``), ``figures`` the
reports' figures, ``rows`` and ``responses`` their CSV rows and JSON bodies,
``usecase`` the one path of every report request (authorised there, for HTTP
and the command line alike) and ``cli`` the command. See docs/reports.md.
"""
