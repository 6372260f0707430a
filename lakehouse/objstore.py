"""Opening a lake root on any fsspec URL: a local folder, ``s3://`` (any S3-compatible
server), or another fsspec protocol.

:func:`open_lake` turns a URL and the settings into a :class:`Lake`: the fsspec
filesystem, the root path as that filesystem names it, and the options other engines
(Polars, DuckDB) need to reach the same place. Credentials come from the settings
(``MAGSAG_STORAGE_S3_*``) or the usual AWS variables and never appear in messages.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from magsag.backends.errors import BackendUnavailable, ConfigError, NotFoundError, StorageError, redact_dsn
from magsag.lakehouse import layout

if TYPE_CHECKING:
    import fsspec
    from magsag.lakehouse.settings import StorageSettings

DEFAULT_REGION = "us-east-1"
DEFAULT_RETRIES = 4  # retries of a transient store error, after the first attempt
RETRY_BASE_DELAY = 0.2  # seconds; doubles each retry (with jitter), capped below
RETRY_MAX_DELAY = 5.0

T = TypeVar("T")


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3-compatible server (secrets kept out of ``repr``)."""

    endpoint_url: str | None = None
    region: str = DEFAULT_REGION
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    retries: int = DEFAULT_RETRIES

    @classmethod
    def from_settings(cls, settings: StorageSettings | None) -> S3Options:
        def secret(value: Any) -> str | None:
            return value.get_secret_value() if value is not None else None

        endpoint = settings.s3_endpoint_url if settings else None
        region = (settings.s3_region if settings else None) or os.environ.get("AWS_REGION") or DEFAULT_REGION
        key = (secret(settings.s3_access_key_id) if settings else None) or os.environ.get("AWS_ACCESS_KEY_ID")
        sec = (secret(settings.s3_secret_access_key) if settings else None) or os.environ.get("AWS_SECRET_ACCESS_KEY")
        retries = getattr(settings, "s3_retries", DEFAULT_RETRIES) if settings else DEFAULT_RETRIES
        return cls(
            endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL"),
            region=region,
            key=key,
            secret=sec,
            retries=retries,
        )

    def s3fs_kwargs(self) -> dict[str, Any]:
        # botocore does not retry (its backoff would multiply ours); s3fs retries a broken
        # connection once; retry() below adds the exponential backoff, so a dead endpoint
        # fails in seconds, not minutes.
        kw: dict[str, Any] = {
            "client_kwargs": {"region_name": self.region},
            "config_kwargs": {
                "retries": {"max_attempts": 1, "mode": "standard"},
                "connect_timeout": 10,
                "read_timeout": 120,
            },
        }
        if self.endpoint_url:
            kw["endpoint_url"] = self.endpoint_url
        if self.key is not None:
            kw["key"] = self.key
            kw["secret"] = self.secret
        return kw

    def polars_options(self) -> dict[str, str]:
        out = {"aws_region": self.region}
        if self.endpoint_url:
            out["aws_endpoint_url"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                out["aws_allow_http"] = "true"
        if self.key is not None:
            out["aws_access_key_id"] = self.key
            out["aws_secret_access_key"] = self.secret or ""
        return out


@dataclass(frozen=True)
class Lake:
    """A lake root: ``fs`` + ``root`` (as ``fs`` names it) + how other engines reach it."""

    url: str
    protocol: str
    fs: fsspec.AbstractFileSystem = field(repr=False)
    root: str
    s3: S3Options | None = None
    retries: int = DEFAULT_RETRIES

    @property
    def is_local(self) -> bool:
        return self.protocol in ("file", "local")

    def path(self, rel: str) -> str:
        """Path of ``rel`` for ``self.fs``."""
        return layout.join(self.root, rel)

    def uri(self, rel: str = "") -> str:
        """Full URL of ``rel`` for other engines: an absolute local path or ``s3://bucket/key``."""
        p = self.path(rel) if rel else self.root
        if self.is_local:
            return p
        return f"{self.protocol}://{p}"

    def storage_options(self) -> dict[str, Any]:
        """Options for Polars ``scan_parquet(storage_options=...)``."""
        return self.s3.polars_options() if self.s3 else {}


def _protocol(url: str) -> str:
    if "://" not in url:
        return "file"
    proto = url.split("://", 1)[0].lower()
    return {"s3a": "s3", "local": "file"}.get(proto, proto)


def open_lake(url: str | None = None, settings: StorageSettings | None = None) -> Lake:
    """Open the lake at ``url`` (default: ``settings.lake_url``).

    Raises :class:`ConfigError` for an unsupported protocol or a missing optional package.
    Nothing is created or contacted yet: the first operation finds out whether the
    store is reachable.
    """
    import fsspec

    if url is None:
        if settings is None:
            from magsag.lakehouse.settings import load_settings

            settings = load_settings()
        url = settings.lake_url
    url = url.strip()
    if not url:
        raise ConfigError("lake URL must not be empty")
    proto = _protocol(url)
    if proto == "file":
        local = url.split("://", 1)[1] if "://" in url else url
        root = str(Path(local).expanduser().resolve())
        return Lake(url=url, protocol="file", fs=fsspec.filesystem("file"), root=root)
    if proto == "s3":
        try:
            import s3fs
        except ImportError:
            raise ConfigError("an s3:// lake needs the [s3] extra: pip install 'magsag-storage[s3]'") from None
        opts = S3Options.from_settings(settings)
        bucket_key = url.split("://", 1)[1].strip("/")
        if not bucket_key:
            raise ConfigError(f"lake URL {url!r} names no bucket")
        fs = s3fs.S3FileSystem(**opts.s3fs_kwargs())
        fs.retries = 2  # s3fs's own retries of broken connections (its default: 5)
        return Lake(url=url, protocol="s3", fs=fs, root=bucket_key, s3=opts, retries=opts.retries)
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"lake URL {url!r}: {exc}") from None
    retries = getattr(settings, "s3_retries", DEFAULT_RETRIES) if settings else DEFAULT_RETRIES
    return Lake(url=url, protocol=proto, fs=fs, root=root.rstrip("/"), retries=retries)


# ----------------------------------------------------------------- store failures
#
# Object stores fail in a handful of ways. Transient ones (connection reset, timeouts,
# 5xx, throttling) are retried with exponential backoff; the rest, and transient ones
# that outlast the retries, become one-line StorageErrors that name the store and the
# action but never a credential.

UNREACHABLE = "unreachable"
TRANSIENT = "transient"
ACCESS = "access"
NO_BUCKET = "no_bucket"
MISSING = "missing"
OTHER = "other"

_ACCESS_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "InvalidToken",
    "ExpiredToken",
    "InvalidSecurity",
    "AccountProblem",
    "403",
    "Forbidden",
}
_TRANSIENT_CODES = {
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
    "500",
    "502",
    "503",
    "504",
}
_MISSING_CODES = {"NoSuchKey", "NotFound", "404", "NoSuchUpload"}
# Exception class names (anywhere in the MRO) that mean "could not connect at all" ...
_UNREACHABLE_TYPES = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ClientConnectorError",
    "ConnectionRefusedError",
    "ProxyConnectionError",
}
# ... or "the connection broke / timed out mid-request": worth another try.
_TRANSIENT_TYPES = {
    "ConnectionClosedError",
    "ReadTimeoutError",
    "HTTPClientError",
    "ConnectionResetError",
    "BrokenPipeError",
    "TimeoutError",
    "FSTimeoutError",
    "IncompleteRead",
    "ResponseParserError",
    "ClientPayloadError",
    "ServerDisconnectedError",
    "ClientOSError",
    "ResponseStreamingError",
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, *(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))]


def _client_error(e: BaseException) -> tuple[str, int] | None:
    response = getattr(e, "response", None)
    if not isinstance(response, dict) or "Error" not in response:
        return None
    code = str(response.get("Error", {}).get("Code") or "")
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return code, status


def classify(exc: BaseException) -> str:
    """What kind of store failure ``exc`` is: unreachable, transient, access, no_bucket, missing, other."""
    for e in _chain(exc):
        ce = _client_error(e)
        if ce is not None:
            code, status = ce
            if code in _ACCESS_CODES or status == 403:
                return ACCESS
            if code == "NoSuchBucket":
                return NO_BUCKET
            if code in _MISSING_CODES or status == 404:
                return MISSING
            if code in _TRANSIENT_CODES or status >= 500 or status == 429:
                return TRANSIENT
            return OTHER
        names = {c.__name__ for c in type(e).__mro__}
        if names & _UNREACHABLE_TYPES:
            return UNREACHABLE
        if names & _TRANSIENT_TYPES:
            return TRANSIENT
    # Errors s3fs translated without keeping the response.
    if isinstance(exc, PermissionError):
        return ACCESS
    if isinstance(exc, FileNotFoundError):
        return NO_BUCKET if "bucket does not exist" in str(exc).lower() else MISSING
    return OTHER


def _scrub(lake: Lake, text: str) -> str:
    """One line, no credentials, not too long."""
    line = " ".join(str(text).split())
    if lake.s3 is not None:
        for secret in (lake.s3.secret, lake.s3.key):
            if secret and len(secret) >= 3:
                line = line.replace(secret, "***")
    line = redact_dsn(line)
    return line if len(line) <= 240 else line[:237] + "..."


def _reason(lake: Lake, exc: BaseException) -> str:
    for e in _chain(exc):
        ce = _client_error(e)
        if ce is not None and ce[0]:
            return _scrub(lake, ce[0])
    text = str(exc) or type(exc).__name__
    return _scrub(lake, text)


def _bucket(lake: Lake) -> str:
    return lake.root.split("/", 1)[0]


def store_error(lake: Lake, exc: BaseException, action: str, attempts: int = 1) -> StorageError:
    """Map a store failure to a one-line :class:`StorageError` (never quoting a credential).

    ``action`` says what was being done ("uploading events/dt=2026-11-01/...").
    """
    if isinstance(exc, StorageError):
        return exc
    kind = classify(exc)
    where = f"lake {lake.uri()}"
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if kind == UNREACHABLE:
        if lake.s3 is not None:
            endpoint = redact_dsn(lake.s3.endpoint_url or f"AWS S3 ({lake.s3.region})")
            return BackendUnavailable(f"S3 endpoint {endpoint} unreachable while {action}{tries}; is the server up?")
        return BackendUnavailable(f"{where} unreachable while {action}{tries}: {_reason(lake, exc)}")
    if kind == TRANSIENT:
        return BackendUnavailable(f"{where}: {action} kept failing{tries}: {_reason(lake, exc)}")
    if kind == ACCESS:
        if lake.s3 is not None:
            return ConfigError(f"access denied to {lake.uri()} while {action} (check credentials)")
        return ConfigError(f"permission denied in {where} while {action}: {_reason(lake, exc)}")
    if kind == NO_BUCKET:
        return ConfigError(f"bucket {_bucket(lake)} does not exist (lake {lake.uri()})")
    if kind == MISSING:
        return NotFoundError(f"{where}: {action}: not found")
    return StorageError(f"{where}: {action} failed: {_reason(lake, exc)}")


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential with jitter."""
    delay = min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * (2**attempt))
    return delay * (0.5 + random.random() / 2)


def retry(lake: Lake, action: str, fn: Callable[..., T], *args: Any, retries: int | None = None, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)``; retry transient store errors with backoff; map failures.

    ``fn`` must be idempotent (a PUT, a copy, a read, a delete). Raises only
    :class:`StorageError` subclasses: :class:`NotFoundError` for a missing object,
    :class:`BackendUnavailable` when the store cannot be reached, :class:`ConfigError`
    for access denied or a missing bucket.
    """
    n = lake.retries if retries is None else retries
    if lake.is_local:
        n = 0
    attempt = 0
    while True:
        try:
            return fn(*args, **kwargs)
        except StorageError:
            raise
        except Exception as exc:
            kind = classify(exc)
            if kind in (UNREACHABLE, TRANSIENT) and attempt < n:
                time.sleep(backoff_delay(attempt))
                attempt += 1
                continue
            raise store_error(lake, exc, action, attempts=attempt + 1) from exc


@contextmanager
def store_errors(lake: Lake, action: str) -> Iterator[None]:
    """Map any store failure inside the block to a one-line StorageError (no retry)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        raise store_error(lake, exc, action) from exc
