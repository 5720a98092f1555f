"""One loader for whatever a setting names as ``module:attribute``: built-ins and plugins alike.

The built-in authentication backends and store backends are found the same
way as a plugin given on the command line (``--auth=package.module:Class``),
as uvicorn's ``importer`` loads its own classes and an application alike:
importing only what a setting names keeps start-up light (a server on
SQLite never imports PyMongo) and gives one set of errors.
"""

from __future__ import annotations

import importlib
from typing import Any


class ImportFromStringError(Exception):
    """``module:attribute`` could not be loaded; the message says why.

    The error that stopped it is kept as ``__cause__``, with its traceback
    into the module: a plugin's author needs the line that failed.
    """


def import_from_string(target: str) -> Any:
    """The attribute ``target`` names as ``module:attribute``.

    Any error the module raises while it is imported is reported as an
    :class:`ImportFromStringError` too: a plugin's bug is a start-up error,
    not a crash.
    """
    module_name, separator, attribute = target.partition(":")
    if not separator or not module_name or not attribute:
        raise ImportFromStringError(f"{target!r} is not of the form 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises at import
        raise ImportFromStringError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        return getattr(module, attribute)
    except AttributeError as exc:
        raise ImportFromStringError(f"module {module_name!r} has no {attribute!r}") from exc
