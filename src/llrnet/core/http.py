"""HTTP GET with timeouts, bounded retries and exponential backoff.
More: docs/core.md, "llrnet.core.http"."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests

from llrnet.core.errors import UsageError, first_line

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Client errors that will not go away by asking again.
PERMANENT_STATUS = frozenset({400, 401, 403, 404, 405, 410, 451})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one URL.

    Attributes:
        timeout: seconds allowed to connect, and between two received bytes.
        attempts: total tries per URL (>= 1).
        backoff: seconds before the 2nd try; doubles after each failure.
        max_backoff: cap on one wait, in seconds.
    """

    timeout: float = 30.0
    attempts: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise UsageError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.attempts < 1:
            raise UsageError(f"attempts must be >= 1, got {self.attempts}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise UsageError("backoff and max_backoff must be >= 0 seconds")

    def wait(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failed attempts (1, 2, ...)."""
        return float(min(self.max_backoff, self.backoff * 2 ** (failures - 1)))


class FetchError(Exception):
    """A URL could not be fetched (and, if given, processed) after all attempts."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class ContentError(ValueError):
    """The response body is not what was expected (raise from ``process``)."""


def fetch(
    url: str,
    *,
    policy: RetryPolicy,
    session: requests.Session | None = None,
    process: Callable[[bytes], T],
) -> T:
    """GET ``url`` and return ``process(body)`` (pass ``bytes`` for the raw body).

    Retries connection errors, timeouts, 5xx/408/429 responses and bodies that
    ``process`` rejects with :class:`ContentError` (a truncated transfer is the
    usual cause). 4xx errors such as 404 fail at once.

    Raises:
        FetchError: with the last reason, after ``policy.attempts`` tries.
    """
    session = session or requests.Session()

    def attempt() -> T:
        try:
            response = session.get(url, timeout=policy.timeout)
        except requests.RequestException as error:
            raise RetryableError(request_failure(error, policy)) from error
        status = response.status_code
        if status in PERMANENT_STATUS:
            raise FetchError(url, f"HTTP {status}")
        if status >= 400:
            raise RetryableError(f"HTTP {status}")
        try:
            return process(response.content)
        except ContentError as error:
            raise RetryableError(str(error)) from error
        except requests.RequestException as error:  # the body broke off while read
            raise RetryableError(request_failure(error, policy)) from error

    return retrying(url, policy, attempt, give_up=lambda reason: FetchError(url, reason))


class RetryableError(Exception):
    """Raised by an attempt of :func:`retrying`: worth another try; the message says why."""


def retrying(url: str, policy: RetryPolicy, attempt: Callable[[], T], *,
             give_up: Callable[[str], Exception], level: int = logging.DEBUG) -> T:
    """``attempt()``, tried up to ``policy.attempts`` times while it raises :class:`RetryableError`,
    waiting ``policy.wait(k)`` seconds after the k-th failure (logged at ``level``).

    Raises:
        ``give_up("<last reason> (after N attempts)")`` once the attempts are spent;
        anything else ``attempt`` raises, at once.
    """
    reason = "not attempted"
    for tried in range(1, policy.attempts + 1):
        try:
            return attempt()
        except RetryableError as error:
            reason = str(error)
        if tried < policy.attempts:
            delay = policy.wait(tried)
            log.log(level, "%s failed (%s); retrying in %.1f s", url, reason, delay)
            time.sleep(delay)
    raise give_up(f"{reason} (after {policy.attempts} attempts)")


def request_failure(error: requests.RequestException, policy: RetryPolicy) -> str:
    """A short reason for a failed request: the timeout, or the error's type and first line."""
    if isinstance(error, requests.Timeout):
        return f"timed out (timeout {policy.timeout:g} s)"
    return f"{type(error).__name__}: {first_line(error)[:200]}"
