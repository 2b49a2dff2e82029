"""Modules that share their name with a verb of the Python API (``blindcheck.correlate``, ``blindcheck.report``).

Importing ``blindcheck.correlate`` binds the *module* to the package attribute that held the API function of the
same name, so ``blindcheck.correlate(...)`` would stop working once anything imported the module. Such a module
calls :func:`callable_module` at its end: the module then runs its verb when called, and both spellings work.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


def callable_module(name: str, verb: Callable[..., Any]) -> None:
    """Make the module ``name`` callable as ``verb``."""

    class _VerbModule(types.ModuleType):
        __doc__ = sys.modules[name].__doc__

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return verb(*args, **kwargs)

    sys.modules[name].__class__ = _VerbModule
