"""Callbacks never answer 500: :func:`guarded` turns any failure into a message in the UI.

A user error (:class:`~aevis_core.errors.AEVisError`, a malformed payload) shows its one line; an
unexpected one is logged with its traceback and shown as "internal error (Type)". ``PreventUpdate``
passes through (HTTP 204, nothing changes on the page).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from dash.exceptions import PreventUpdate

from app.jobs.messages import user_message
from app.payloads import PayloadError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def message_of(exc: BaseException) -> str:
    """One line for any exception (payload errors are user errors)."""
    if isinstance(exc, PayloadError):
        return f"ignored a malformed request: {exc}"
    return user_message(exc)


def guarded(fallback: Callable[[str], Any]) -> Callable[[F], F]:
    """Decorate a callback: on an exception, return ``fallback(message)`` instead of raising."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except PreventUpdate:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a 500
                msg = message_of(exc)
                log.info("callback %s answered with a message: %s", fn.__name__, msg)
                return fallback(msg)

        return run  # type: ignore[return-value]

    return wrap


def bound(services: Any, fn: Callable[..., Any], fallback: Callable[[str], Any]) -> Callable[..., Any]:
    """``fn(services, *args)`` as a guarded Dash callback (``fn`` stays a plain, testable function)."""

    def callback(*args: Any) -> Any:
        return fn(services, *args)

    callback.__name__ = callback.__qualname__ = fn.__name__
    callback.__doc__ = fn.__doc__
    return guarded(fallback)(callback)


def fired(component_id: str) -> bool:
    """Whether ``component_id`` is among the inputs that triggered this callback (Dash can batch several
    triggers in one call; ``ctx.triggered_id`` names only the first)."""
    from dash import ctx
    from dash.exceptions import MissingCallbackContextException

    try:
        props = ctx.triggered_prop_ids
    except MissingCallbackContextException:  # called as a plain function (tests, scripts)
        return False
    return any(prop.rsplit(".", 1)[0] == str(component_id) for prop in props)
