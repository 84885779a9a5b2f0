"""HTTP GET with timeouts, bounded retries and exponential backoff.
More: docs/core.md, "llrnet.core.http"."""

from __future__ import annotations

import logging
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import requests
import urllib3

from llrnet.core.errors import UsageError, first_line

log = logging.getLogger(__name__)

T = TypeVar("T")
N = TypeVar("N", int, float)

#: Client errors that will not go away by asking again (every 4xx but 408 and 429).
PERMANENT_STATUS = frozenset(range(400, 500)) - {408, 429}

#: Redirects followed per request; a longer chain is refused like a loop.
MAX_REDIRECTS = 10

#: Bytes one read asks for (a read returns as soon as any bytes arrived).
BLOCK = 1 << 16

#: What replaces a redacted secret in a URL.
REDACTED = "REDACTED"

#: Default cap of :func:`fetch` bodies (an image, an id list), in bytes.
DEFAULT_FETCH_MAX_BYTES = 64 << 20
#: Default minimum transfer rate (bytes per second, averaged over a window).
DEFAULT_MIN_RATE = 1024.0
#: Default window of the minimum rate, in seconds.
DEFAULT_RATE_WINDOW = 60.0
ENV_MIN_RATE = "LLRNET_MIN_RATE"
ENV_RATE_WINDOW = "LLRNET_RATE_WINDOW"

_SECRET_NAMES = frozenset({
    "token", "access_token", "refresh_token", "id_token", "auth", "authorization", "key",
    "api_key", "apikey", "api-key", "secret", "client_secret", "password", "passwd", "pwd",
    "sig", "signature", "credential", "credentials", "session", "sessionid", "code",
    "googleaccessid", "key-pair-id", "policy", "sas",
})
_SECRET_PARTS = ("token", "secret", "password", "passwd", "signature", "credential", "apikey",
                 "api_key", "private")
_SIGNATURE_NAMES = frozenset({"sig", "signature", "x-amz-signature", "x-goog-signature"})
_SIGNED_ONLY = frozenset({"expires", "se", "st", "x-amz-expires", "x-goog-expires"})
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_QUERY_IN_TEXT = re.compile(r"\?[^\s'\"<>]+")


def _secret_name(name: str) -> bool:
    lowered = unquote(name).strip().lower()
    return (lowered in _SECRET_NAMES or lowered.startswith(("x-amz-", "x-goog-"))
            or lowered.endswith(("_key", "-key", "_sig"))
            or any(part in lowered for part in _SECRET_PARTS))


def _redact_query(query: str) -> str:
    """``query`` (without ``?``) with the values of credential-like parameters redacted."""
    pairs = [part.split("=", 1) if "=" in part else [part] for part in query.split("&")]
    signed = any(unquote(p[0]).strip().lower() in _SIGNATURE_NAMES for p in pairs)
    out = []
    for pair in pairs:
        name = pair[0]
        secret = _secret_name(name) or (signed and unquote(name).strip().lower() in _SIGNED_ONLY)
        if len(pair) == 2 and secret and pair[1]:
            out.append(f"{name}={REDACTED}")
        else:
            out.append("=".join(pair))
    return "&".join(out)


def redact_url(url: str) -> str:
    """``url`` safe to print, log, cache or record: the userinfo (``user:password@``)
    becomes ``REDACTED@`` and the values of query (and fragment) parameters that
    look like credentials become ``REDACTED`` (``token``, ``key``, ``sig``,
    ``signature``, ``password``, ``access_token``, ``X-Amz-*``, ``X-Goog-*``, any
    name containing ``token``/``secret``/``signature``..., and ``Expires`` beside
    a signature). Everything else is kept as written; a string that is not a URL
    comes back unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _QUERY_IN_TEXT.sub(lambda m: "?" + _redact_query(m.group(0)[1:]), url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = _redact_query(parts.query) if parts.query else parts.query
    fragment = _redact_query(parts.fragment) if "=" in parts.fragment else parts.fragment
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=fragment))


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record with the URLs in its message
    redacted (:func:`redact_text`); installed on urllib3's connection pool logger,
    which logs each request's path and query at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_text(text: str) -> str:
    """``text`` (an error message, a log line) with every URL in it passed through
    :func:`redact_url`, and credential-like parameters of a bare ``?query`` redacted."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    return _QUERY_IN_TEXT.sub(lambda m: "?" + _redact_query(m.group(0)[1:]), text)


logging.getLogger("urllib3.connectionpool").addFilter(RedactingFilter())

_SIZE = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]*)?)\s*(?P<unit>[KMGT]?)(?:i?B)?\s*$",
                   re.IGNORECASE)


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes from ``"4G"``, ``"512MiB"``, ``"64k"`` or ``"1000"`` (K/M/G/T are
    powers of 1024).

    Raises:
        UsageError: not a size, or not > 0.
    """
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(text)
        if match is None:
            raise UsageError(f"{what}: {text!r} is not a size (bytes, or a number with K, M, "
                             "G or T, e.g. 4G)")
        scale = 1 << (10 * " KMGT".index(match.group("unit").upper() or " "))
        value = int(float(match.group("number")) * scale)
    if value <= 0:
        raise UsageError(f"{what} must be > 0 bytes, got {text!r}")
    return value


def format_size(size: float) -> str:
    """``4294967296`` -> ``"4 GiB"``, ``1536`` -> ``"1.5 KiB"``, ``100`` -> ``"100 bytes"``."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.4g} {unit}"
    return f"{int(size)} bytes"


def env_number(name: str, kind: Callable[[str], N], default: N, *,
               zero_ok: bool = False) -> N:
    """``kind($name)`` when the variable is set, else ``default``; the value must be
    > 0 (>= 0 with ``zero_ok``).

    Raises:
        UsageError: the variable is not a number of that kind, or out of range.
    """
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(f"${name} must be a number, got {text!r}") from None
    if value < 0 or (value == 0 and not zero_ok):
        raise UsageError(f"${name} must be {'>=' if zero_ok else '>'} 0, got {text!r}")
    return value


@dataclass(frozen=True)
class TransferLimits:
    """Bounds on one response body, besides the per-read timeout.

    Attributes:
        max_bytes: the most bytes taken (as sent). A ``Content-Length`` above it is
            refused before reading; a body without one is cut off there. A body
            with one must have exactly that many bytes.
        min_rate: bytes per second that must arrive, on average over every
            ``window`` seconds (0: no minimum); a server that drips a byte now
            and then fails after one window.
        window: seconds over which ``min_rate`` is averaged (> 0).
        override: how a user raises ``max_bytes`` (shown in the refusal).
    """

    max_bytes: int
    min_rate: float = DEFAULT_MIN_RATE
    window: float = DEFAULT_RATE_WINDOW
    override: str = ""

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise UsageError(f"max_bytes must be > 0, got {self.max_bytes}")
        if self.min_rate < 0 or self.window <= 0:
            raise UsageError("min_rate must be >= 0 bytes/s and window > 0 seconds")

    @classmethod
    def from_env(cls, max_bytes: int | str | None, *, env: str, default: int,
                 flag: str = "") -> TransferLimits:
        """Limits from ``max_bytes`` (a flag's value), else ``$env``, else ``default``;
        the rate from ``$LLRNET_MIN_RATE`` (bytes/s) and ``$LLRNET_RATE_WINDOW`` (s)."""
        text = max_bytes if max_bytes is not None else os.environ.get(env) or default
        override = " or ".join(filter(None, [flag, f"${env}"]))
        min_rate = env_number(ENV_MIN_RATE, float, DEFAULT_MIN_RATE, zero_ok=True)
        window = env_number(ENV_RATE_WINDOW, float, DEFAULT_RATE_WINDOW, zero_ok=True)
        return cls(parse_size(text, flag or f"${env}"), min_rate, window or DEFAULT_RATE_WINDOW,
                   override)

    def over_cap(self, what: str) -> str:
        """The one-line reason for a body of ``what`` over :attr:`max_bytes`."""
        hint = f"; raise the cap with {self.override}" if self.override else ""
        return f"{what}, over the download cap of {format_size(self.max_bytes)}{hint}"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one URL.

    Attributes:
        timeout: seconds allowed to connect, and between two received bytes.
        attempts: total tries per URL (>= 1).
        backoff: seconds before the 2nd try; doubles after each failure.
        max_backoff: cap on one wait, in seconds (also on a server's ``Retry-After``).
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
    """A URL could not be fetched (and, if given, processed); ``url`` is redacted;
    ``permanent``: asking again cannot help (see :class:`PermanentError`)."""

    def __init__(self, url: str, reason: str, permanent: bool = False) -> None:
        self.url = redact_url(url)
        self.reason = redact_text(reason)
        self.permanent = permanent
        super().__init__(f"{self.url}: {self.reason}")


class ContentError(ValueError):
    """The response body is not what was expected (raise from ``process``)."""


class RetryableError(Exception):
    """Raised by an attempt of :func:`retrying`: worth another try; the message says why.

    ``delay``: seconds the server asked to wait (``Retry-After``), if any.
    """

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class PermanentError(Exception):
    """Raised by an attempt of :func:`retrying`: asking again cannot help (a 4xx, a
    redirect loop or to a non-http(s) URL, a TLS error, a body over its cap)."""


def fetch(
    url: str,
    *,
    policy: RetryPolicy,
    session: requests.Session | None = None,
    process: Callable[[bytes], T],
    limits: TransferLimits | None = None,
) -> T:
    """GET ``url`` and return ``process(body)`` (pass ``bytes`` for the raw body).

    The body is bounded by ``limits`` (default :data:`DEFAULT_FETCH_MAX_BYTES`
    and the minimum rate); a ``Content-Encoding`` is undone within the same cap.
    Retries connection errors, timeouts, too-slow transfers, 5xx/408/429
    responses and bodies that ``process`` rejects with :class:`ContentError` (a
    truncated transfer is the usual cause). Fails at once on other 4xx answers,
    redirect loops, redirects to non-http(s) URLs, TLS errors and bodies over the cap.

    Raises:
        FetchError: with the reason (the last one, after ``policy.attempts`` tries).
    """
    session = session or requests.Session()
    limits = limits or TransferLimits(DEFAULT_FETCH_MAX_BYTES)

    def attempt() -> T:
        response, _ = get(session, url, policy, headers={"Accept-Encoding": "identity"})
        with response:
            check_status(response)
            body = bytearray()
            read_body(response, limits, body.extend, policy=policy, decode=True)
        try:
            return process(bytes(body))
        except ContentError as error:
            raise RetryableError(str(error)) from error

    return retrying(url, policy, attempt, give_up=lambda reason: FetchError(url, reason),
                    refuse=lambda reason: FetchError(url, reason, permanent=True))


def get(session: requests.Session, url: str, policy: RetryPolicy,
        headers: dict[str, str] | None = None) -> tuple[requests.Response, str]:
    """A streamed GET of ``url``, following at most :data:`MAX_REDIRECTS` http(s)
    redirects; returns the response and the URL that gave it.

    Raises:
        RetryableError: a connection error or a timeout.
        PermanentError: a redirect loop, a redirect to a non-http(s) URL, too many
            redirects, a TLS error, a URL no request can be made for.
    """
    current, seen = url, {url}
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = session.get(current, stream=True, timeout=policy.timeout,
                                   allow_redirects=False, headers=headers)
        except requests.exceptions.SSLError as error:
            where = "" if current == url else f" at {redact_url(current)}"
            raise PermanentError(f"TLS error{where}: {redact_text(first_line(error))[:200]}"
                                 ) from error
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema) as error:
            raise PermanentError(f"cannot request {redact_url(current)} "
                               f"({type(error).__name__})") from error
        except requests.RequestException as error:
            raise RetryableError(request_failure(error, policy)) from error
        location = response.headers.get("Location") if response.is_redirect else None
        if location is None:
            return response, current
        response.close()
        target = urljoin(current, location.strip())
        scheme = urlsplit(target).scheme.lower()
        if scheme not in ("http", "https"):
            raise PermanentError(f"refusing a redirect to a {scheme or 'schemeless'}: URL (from "
                                 f"{redact_url(current)})")
        if target in seen:
            raise PermanentError(f"redirect loop at {redact_url(target)}")
        seen.add(target)
        current = target
    raise PermanentError(f"more than {MAX_REDIRECTS} redirects (the last to "
                       f"{redact_url(current)})")


def check_status(response: requests.Response) -> None:
    """Return if ``response`` is a success.

    Raises:
        PermanentError: ``HTTP <status>`` for a 4xx other than 408 and 429.
        RetryableError: ``HTTP <status>`` for 408, 429 and 5xx (with the server's
            ``Retry-After`` in seconds, when it gives one).
    """
    status = response.status_code
    if status < 400:
        return
    if status in PERMANENT_STATUS:
        raise PermanentError(f"HTTP {status}")
    retry_after = response.headers.get("Retry-After", "")
    delay = float(retry_after) if retry_after.strip().isdigit() else None
    raise RetryableError(f"HTTP {status}", delay)


def read_body(response: requests.Response, limits: TransferLimits,
              sink: Callable[[bytes], None], *, policy: RetryPolicy,
              decode: bool = False) -> int:
    """Pass the body of a streamed ``response`` to ``sink`` block by block, within
    ``limits``; returns the number of bytes received (as sent). See :func:`iter_body`."""
    counter = [0]
    for block in iter_body(response, limits, policy=policy, decode=decode, received=counter):
        sink(block)
    return counter[0]


def iter_body(response: requests.Response, limits: TransferLimits, *, policy: RetryPolicy,
              decode: bool = False, received: list[int] | None = None) -> Iterator[bytes]:
    """The body of a streamed ``response``, block by block (each as soon as it
    arrived), within ``limits``. ``received[0]``, if given, counts the bytes as sent.

    ``decode``: undo a gzip/deflate ``Content-Encoding`` (the decoded bytes are
    capped too); else the bytes are taken as sent.

    Raises:
        PermanentError: the body is (announced) over ``limits.max_bytes``, or has an
            encoding that cannot be undone.
        RetryableError: the transfer broke off, was shorter than its
            ``Content-Length``, timed out or fell below the minimum rate.
    """
    announced = response.headers.get("Content-Length", "").strip()
    total = int(announced) if announced.isdigit() else None
    if total is not None and total > limits.max_bytes:
        raise PermanentError(limits.over_cap(f"the server announces {total} bytes"))
    decoder = _decoder(response) if decode else None
    count = received if received is not None else [0]
    count[0] = decoded = 0
    started = window_start = time.monotonic()
    window_bytes = 0
    try:
        while block := response.raw.read1(BLOCK, decode_content=False):
            count[0] += len(block)
            window_bytes += len(block)
            if count[0] > limits.max_bytes:
                raise PermanentError(limits.over_cap(f"the body passed {limits.max_bytes} bytes"))
            if decoder is not None:
                block = decoder.decompress(block, limits.max_bytes - decoded + 1)
                if decoder.unconsumed_tail:
                    raise PermanentError(limits.over_cap(
                        f"the decoded body passed {limits.max_bytes} bytes"))
            decoded += len(block)
            yield block
            now = time.monotonic()
            if limits.min_rate and now - window_start >= limits.window:
                if window_bytes < limits.min_rate * (now - window_start):
                    raise RetryableError(
                        f"too slow: {window_bytes} bytes in {now - window_start:.1f} s, below "
                        f"the minimum of {limits.min_rate:g} bytes/s over {limits.window:g} s "
                        f"({count[0]} bytes in {now - started:.0f} s)")
                window_start, window_bytes = now, 0
    except (requests.RequestException, urllib3.exceptions.HTTPError, zlib.error) as error:
        raise RetryableError(f"transfer broken after {count[0]} bytes ({type(error).__name__})"
                             ) from error
    if decoder is not None:
        yield decoder.flush()
    if total is not None and count[0] != total:
        raise RetryableError(f"truncated: {count[0]} of {total} bytes")


def _decoder(response: requests.Response) -> zlib._Decompress | None:
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    raise PermanentError(f"unsupported Content-Encoding {encoding!r}")


def retrying(url: str, policy: RetryPolicy, attempt: Callable[[], T], *,
             give_up: Callable[[str], Exception], level: int = logging.DEBUG,
             refuse: Callable[[str], Exception] | None = None) -> T:
    """``attempt()``, tried up to ``policy.attempts`` times while it raises :class:`RetryableError`,
    waiting ``policy.wait(k)`` seconds after the k-th failure (or the server's
    ``Retry-After``, capped at ``policy.max_backoff``), logged at ``level`` with
    the URL redacted.

    Raises:
        ``give_up("<last reason> (after N attempts)")`` once the attempts are spent;
        ``(refuse or give_up)("<reason>")`` at once on :class:`PermanentError`;
        anything else ``attempt`` raises, at once.
    """
    reason = "not attempted"
    for tried in range(1, policy.attempts + 1):
        try:
            return attempt()
        except PermanentError as error:
            raise (refuse or give_up)(redact_text(str(error))) from None
        except RetryableError as error:
            reason = redact_text(str(error))
            asked = error.delay
        if tried < policy.attempts:
            delay = policy.wait(tried) if asked is None else min(asked, policy.max_backoff)
            log.log(level, "%s failed (%s); retrying in %.1f s", redact_url(url), reason, delay)
            time.sleep(delay)
    raise give_up(f"{reason} (after {policy.attempts} attempts)")


def request_failure(error: requests.RequestException, policy: RetryPolicy) -> str:
    """A short reason for a failed request: the timeout, or the error's type and first
    line (URLs in it redacted)."""
    if isinstance(error, requests.Timeout):
        return f"timed out (timeout {policy.timeout:g} s)"
    return f"{type(error).__name__}: {redact_text(first_line(error))[:200]}"
