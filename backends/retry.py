"""One retry policy for every layer, and which failures it retries.

**The policy** is tenacity's: a bounded number of attempts, exponential backoff with full
jitter (a random wait up to ``first * 2**n`` seconds, capped), only for failures the caller's
predicate calls transient, re-raising the last failure unchanged so the caller maps it to
its one-line :class:`~magsag.backends.errors.StorageError` (and can say how many attempts
were made). :func:`retrying` and :func:`async_retrying` build it; every retry loop of the
package uses them (object-store operations, PostgreSQL reads, PostgreSQL lock waits).

Why tenacity rather than stamina: stamina is a thin, opinionated layer over tenacity (its
own defaults for attempts and total time, global instrumentation and test switches). We
need what tenacity exposes directly: a predicate over the exception (our transient split
below, not a list of classes), a per-loop ``before_sleep`` hook (the PostgreSQL pool drops
its broken connections there), the attempt count of the loop that gave up, and the same
loop in sync and async code. tenacity is Apache-2.0, maintained since 2016, and has no
dependencies of its own; stamina would only add a layer on top of it.

**Transient vs terminal.** A failure is *transient* when the same request may succeed
unchanged a moment later: the server could not be reached or dropped the connection, the
answer was throttled (``SlowDown``, HTTP 429) or a 5xx, a body broke off mid-stream, a lock
is held by someone else for now. Everything else is *terminal* and never retried: access
denied, a missing bucket or key, a malformed request, our own :class:`StorageError`
(already final), a statement PostgreSQL refused.

For object stores, :func:`store_fault` sorts a failure into one of the kinds below by the
exception types of botocore, aiohttp, fsspec and the builtins (and, for an S3 error
response, by its S3 error code and HTTP status). botocore retries every single request
itself (its ``standard`` mode, which the lake's S3 client is configured with): connection
errors, throttling and 5xx answers. :func:`retried_by_botocore` tells those apart, so the
operation-level policy retries only what botocore could not (a response body that broke
while being read, a filesystem without botocore) and attempts are never multiplied.
PostgreSQL's split (a lost connection vs a refused statement) lives with its driver's error
mapping in ``backends/postgres/conn.py``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import tenacity
from magsag.backends.errors import StorageError

DEFAULT_FIRST_WAIT = 0.2  # seconds: the longest first wait (full jitter picks up to it)
DEFAULT_MAX_WAIT = 5.0  # seconds: no single wait is longer

Predicate = Callable[[BaseException], bool]


def _policy(
    retry_if: Predicate,
    attempts: int,
    first: float,
    cap: float,
    before_sleep: Callable[[tenacity.RetryCallState], Any] | None,
    log: logging.Logger | None,
    what: str,
    *,
    is_async: bool = False,
) -> dict[str, Any]:
    def transient(exc: BaseException) -> bool:
        return not isinstance(exc, StorageError) and retry_if(exc)

    def say(state: tenacity.RetryCallState) -> None:
        if log is not None and state.outcome is not None:
            exc = state.outcome.exception()
            log.info("%s: %s (try %d); retrying", what, type(exc).__name__, state.attempt_number)

    def note(state: tenacity.RetryCallState) -> None:
        say(state)
        if before_sleep is not None:
            before_sleep(state)

    async def anote(state: tenacity.RetryCallState) -> None:
        say(state)
        if before_sleep is not None:
            result = before_sleep(state)
            if inspect.isawaitable(result):
                await result

    return {
        "stop": tenacity.stop_after_attempt(max(1, attempts)),
        "wait": tenacity.wait_random_exponential(multiplier=first, max=cap),
        "retry": tenacity.retry_if_exception(transient),
        "before_sleep": anote if is_async else note,
        "reraise": True,
    }


def retrying(
    retry_if: Predicate,
    *,
    attempts: int,
    first: float = DEFAULT_FIRST_WAIT,
    cap: float = DEFAULT_MAX_WAIT,
    before_sleep: Callable[[tenacity.RetryCallState], Any] | None = None,
    log: logging.Logger | None = None,
    what: str = "",
) -> tenacity.Retrying:
    """The policy for blocking code: ``attempts`` tries in all, retrying what ``retry_if`` accepts.

    Use as ``retrying(...)(fn, *args)`` or ``for attempt in retrying(...): with attempt: ...``;
    the last failure is re-raised as it was; ``.statistics["attempt_number"]`` says how many
    tries were made.
    """
    return tenacity.Retrying(**_policy(retry_if, attempts, first, cap, before_sleep, log, what))


def async_retrying(
    retry_if: Predicate,
    *,
    attempts: int,
    first: float = DEFAULT_FIRST_WAIT,
    cap: float = DEFAULT_MAX_WAIT,
    before_sleep: Callable[[tenacity.RetryCallState], Any] | None = None,
    log: logging.Logger | None = None,
    what: str = "",
) -> tenacity.AsyncRetrying:
    """:func:`retrying` for coroutines (``async for attempt in async_retrying(...)``); waits with asyncio.

    ``before_sleep`` may be a coroutine function (awaited before each wait).
    """
    return tenacity.AsyncRetrying(**_policy(retry_if, attempts, first, cap, before_sleep, log, what, is_async=True))


def attempts_made(policy: tenacity.BaseRetrying) -> int:
    """How many tries the (finished) loop of ``policy`` made."""
    return int(policy.statistics.get("attempt_number", 1))


# ------------------------------------------------------------------ object stores

UNREACHABLE = "unreachable"  # transient: could not connect at all
TRANSIENT = "transient"  # transient: dropped, timed out, throttled, 5xx, body cut off
ACCESS = "access"  # terminal: credentials refused
NO_BUCKET = "no_bucket"  # terminal
MISSING = "missing"  # terminal: no such key
OTHER = "other"  # terminal

# S3 error codes (the protocol's own vocabulary, carried in the error response)
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "InvalidToken",
        "ExpiredToken",
        "InvalidSecurity",
        "AccountProblem",
        "Forbidden",
        "403",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "ServerBusy",
        "BadGateway",
        "GatewayTimeout",
        "OperationAborted",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "NoSuchUpload", "404"})


@cache
def _types() -> dict[str, tuple[type[BaseException], ...]]:
    """Exception types by role, from the libraries that are installed."""
    unreachable: list[type[BaseException]] = [ConnectionRefusedError]
    transient: list[type[BaseException]] = [ConnectionError, TimeoutError]
    botocore_retried: list[type[BaseException]] = []
    streaming: list[type[BaseException]] = []
    try:
        from botocore import exceptions as be

        # aiobotocore raises these for aiohttp's own connection errors, too
        unreachable += [be.EndpointConnectionError, be.ConnectTimeoutError, be.ProxyConnectionError]
        streaming += [be.ResponseStreamingError, be.IncompleteReadError]
        transient += [be.HTTPClientError, be.ConnectionError, *streaming]
        # what botocore's standard retry mode retries before it raises (retries/standard.py)
        botocore_retried += [be.ConnectionError, be.HTTPClientError]
    except ImportError:
        pass
    try:
        import aiohttp

        transient += [aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError]
        streaming.append(aiohttp.ClientPayloadError)
    except ImportError:
        pass
    try:
        from fsspec.exceptions import FSTimeoutError

        transient.append(FSTimeoutError)
    except ImportError:
        pass
    from http.client import IncompleteRead

    transient.append(IncompleteRead)
    streaming.append(IncompleteRead)
    return {
        "unreachable": tuple(unreachable),
        "transient": tuple(transient),
        "botocore_retried": tuple(botocore_retried),
        "streaming": tuple(streaming),
    }


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and exceptions carried in its args (s3fs wraps them)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, *(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))]


def error_response(exc: BaseException) -> tuple[str, int, int] | None:
    """``(S3 error code, HTTP status, retries botocore made)`` of the first error response in the chain."""
    for e in chain(exc):
        response = getattr(e, "response", None)  # botocore's ClientError and its modeled subclasses
        if isinstance(response, dict) and "Error" in response:
            meta = response.get("ResponseMetadata") or {}
            code = str((response.get("Error") or {}).get("Code") or "")
            return code, int(meta.get("HTTPStatusCode") or 0), int(meta.get("RetryAttempts") or 0)
    return None


def _response_kind(code: str, status: int) -> str:
    if code in _ACCESS_CODES or status == 403:
        return ACCESS
    if code == "NoSuchBucket":
        return NO_BUCKET
    if code in _MISSING_CODES or status == 404:
        return MISSING
    if code in _TRANSIENT_CODES or status >= 500 or status == 429:
        return TRANSIENT
    return OTHER


def store_fault(exc: BaseException) -> str:
    """What kind of object-store failure ``exc`` is (one of the constants above)."""
    if isinstance(exc, StorageError):
        return OTHER
    resp = error_response(exc)
    if resp is not None:
        return _response_kind(resp[0], resp[1])
    kinds = _types()
    for e in chain(exc):
        if isinstance(e, kinds["unreachable"]):
            return UNREACHABLE
        if isinstance(e, kinds["transient"]):
            return TRANSIENT
    # Errors s3fs translated without keeping the response.
    if isinstance(exc, PermissionError):
        return ACCESS
    if isinstance(exc, FileNotFoundError):
        return NO_BUCKET if "bucket does not exist" in str(exc).lower() else MISSING
    return OTHER


def is_transient_store_fault(exc: BaseException) -> bool:
    return store_fault(exc) in (UNREACHABLE, TRANSIENT)


def retried_by_botocore(exc: BaseException) -> bool:
    """True when botocore's own retry mode already retried this request before raising.

    It retries a whole request on connection errors and on throttled or 5xx answers, but
    not a response body that breaks while the caller reads it.
    """
    resp = error_response(exc)
    if resp is not None:
        return _response_kind(resp[0], resp[1]) == TRANSIENT
    kinds = _types()
    for e in chain(exc):
        if isinstance(e, kinds["streaming"]):
            return False
        if isinstance(e, kinds["botocore_retried"]):
            return True
    return False


def botocore_attempts(exc: BaseException) -> int | None:
    """Tries botocore made of the request that failed with an error response (None: unknown)."""
    resp = error_response(exc)
    return resp[2] + 1 if resp is not None else None
