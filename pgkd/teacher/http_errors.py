"""Helpers shared by the HTTP backends."""

from __future__ import annotations


def retry_after_of(response) -> float | None:
    """Seconds from a ``retry-after`` (or ``retry-after-ms``) header, if the server sent one."""
    headers = getattr(response, "headers", None) or {}
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except ValueError:
        return None
    return None
