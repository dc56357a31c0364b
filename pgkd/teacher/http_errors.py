"""Helpers shared by the HTTP backends."""

from __future__ import annotations

from contextlib import contextmanager
from types import ModuleType
from typing import Iterator

from pgkd.teacher.base import TeacherAuthError, TeacherRequestError, TransientTeacherError


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


@contextmanager
def sdk_errors(sdk: ModuleType, who: str, key_env: str, timeout_s: float) -> Iterator[None]:
    """Map the errors of the ``anthropic`` / ``openai`` SDKs (same exception hierarchy) onto the
    teacher errors; they raise only after their own retries are spent."""
    try:
        yield
    except (sdk.AuthenticationError, sdk.PermissionDeniedError) as error:
        raise TeacherAuthError(f"{who}: HTTP {error.status_code} {error.message}; check {key_env}") from error
    except (sdk.RateLimitError, sdk.InternalServerError) as error:
        raise TransientTeacherError(f"{who}: HTTP {error.status_code} after SDK retries",
                                    retry_after_of(error.response)) from error
    except sdk.APITimeoutError as error:
        raise TransientTeacherError(f"{who}: timed out after {timeout_s}s") from error
    except sdk.APIConnectionError as error:
        raise TransientTeacherError(f"{who}: connection failed: {error}") from error
    except sdk.APIStatusError as error:
        if error.status_code >= 500:
            raise TransientTeacherError(f"{who}: HTTP {error.status_code}") from error
        raise TeacherRequestError(f"{who}: HTTP {error.status_code} {error.message}") from error
    except (sdk.APIResponseValidationError, ValueError) as error:  # ValueError: a body that is not JSON
        raise TransientTeacherError(f"{who}: malformed response body: {error!r}") from error


@contextmanager
def malformed_reply(who: str) -> Iterator[None]:
    """A parsed response that lacks the expected fields."""
    try:
        yield
    except (AttributeError, IndexError, KeyError, TypeError) as error:
        raise TransientTeacherError(f"{who}: malformed response body: {error!r}") from error
