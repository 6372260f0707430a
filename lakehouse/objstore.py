"""Opening a lake root on any fsspec URL: a local folder, ``s3://`` (any S3-compatible
server), or another fsspec protocol.

:func:`open_lake` turns a URL and the settings into a :class:`Lake`: the fsspec
filesystem, the root path as that filesystem names it, and the options other engines
(Polars, DuckDB) need to reach the same place.

**Credentials.** ``MAGSAG_STORAGE_S3_ACCESS_KEY_ID`` / ``_SECRET_ACCESS_KEY`` (and
``_SESSION_TOKEN``) are used as given when set. Otherwise the standard AWS credential
chain decides, through one botocore session: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` with the shared
credentials and config files (``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_CONFIG_FILE``),
SSO, ``credential_process``, container and instance roles. s3fs gets that session
(credentials refresh as they expire); Polars gets the credentials it resolves, session
token included; DuckDB uses its own ``credential_chain`` provider (the ``aws`` extension,
same chain) or, without that extension, the credentials resolved here. No credential
appears in a message: errors name the store and the action only.

**Retries.** botocore retries each request (``standard`` mode, ``s3_retries + 1`` tries
in all) on connection errors, throttling and 5xx answers; :func:`retry` adds the
operation-level policy of :mod:`magsag.backends.retry` for what botocore cannot retry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from magsag.backends.errors import BackendUnavailable, ConfigError, NotFoundError, StorageError, redact_dsn
from magsag.backends.retry import (
    ACCESS,
    MISSING,
    NO_BUCKET,
    TRANSIENT,
    UNREACHABLE,
    attempts_made,
    botocore_attempts,
    error_response,
    is_transient_store_fault,
    retried_by_botocore,
    retrying,
    store_fault,
)
from magsag.lakehouse import layout

if TYPE_CHECKING:
    import fsspec
    from magsag.lakehouse.settings import StorageSettings

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
DEFAULT_RETRIES = 4  # retries of a transient store error, after the first attempt

T = TypeVar("T")


@dataclass(frozen=True)
class S3Credentials:
    """Resolved S3 credentials (kept out of ``repr``)."""

    key: str = field(repr=False)
    secret: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3-compatible server: endpoint, region, retries, and whose credentials.

    ``key``/``secret``/``token`` are the explicit ``MAGSAG_STORAGE_S3_*`` credentials; when
    they are unset the AWS credential chain of a botocore session resolves them.
    """

    endpoint_url: str | None = None
    region: str = DEFAULT_REGION
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    retries: int = DEFAULT_RETRIES
    _state: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # credentials used

    @classmethod
    def from_settings(cls, settings: StorageSettings | None) -> S3Options:
        def secret(name: str) -> str | None:
            value = getattr(settings, name, None) if settings else None
            return value.get_secret_value() if value is not None else None

        key = secret("s3_access_key_id")
        endpoint = (settings.s3_endpoint_url if settings else None) or os.environ.get("AWS_ENDPOINT_URL")
        region = (settings.s3_region if settings else None) or os.environ.get("AWS_REGION")
        if not region and key is None:
            region = _chain_region()
        retries = getattr(settings, "s3_retries", DEFAULT_RETRIES) if settings else DEFAULT_RETRIES
        return cls(
            endpoint_url=endpoint,
            region=region or DEFAULT_REGION,
            key=key,
            secret=secret("s3_secret_access_key") if key is not None else None,
            token=secret("s3_session_token") if key is not None else None,
            retries=retries,
        )

    @property
    def explicit(self) -> bool:
        """Credentials given in the settings (not the AWS chain)."""
        return self.key is not None

    @property
    def attempts(self) -> int:
        """Tries of one request in all (botocore's retry mode)."""
        return self.retries + 1

    def credentials(self) -> S3Credentials | None:
        """The credentials to sign with now: the explicit ones, else the AWS chain's (None: anonymous).

        Chain credentials that expire (an instance or assumed role) are refreshed by botocore
        when they are close to expiry, so ask again for each new connection or scan.
        """
        if self.explicit:
            creds = S3Credentials(self.key or "", self.secret or "", self.token)
        else:
            found = _chain_session().get_credentials()
            if found is None:
                return None
            frozen = found.get_frozen_credentials()
            creds = S3Credentials(frozen.access_key, frozen.secret_key, frozen.token)
        seen = self._state.setdefault("seen", [])
        if creds not in seen:
            seen.append(creds)
        return creds

    def known_secrets(self) -> list[str]:
        """Every credential value this lake has used (to scrub them from messages)."""
        out = [v for v in (self.secret, self.token, self.key) if v]
        for c in self._state.get("seen", []):
            out += [v for v in (c.secret, c.token, c.key) if v]
        return sorted(set(out), key=len, reverse=True)

    def s3fs_kwargs(self) -> dict[str, Any]:
        """s3fs options: botocore retries each request (standard mode), s3fs itself does not retry."""
        kw: dict[str, Any] = {
            "client_kwargs": {"region_name": self.region},
            "config_kwargs": {
                "retries": {"total_max_attempts": self.attempts, "mode": "standard"},
                "connect_timeout": 10,
                "read_timeout": 120,
            },
        }
        if self.endpoint_url:
            kw["endpoint_url"] = self.endpoint_url
        if self.explicit:
            kw["key"], kw["secret"] = self.key, self.secret
            if self.token:
                kw["token"] = self.token
        else:
            kw["session"] = _chain_session(aio=True)  # the AWS credential chain (env, profile, files, roles)
        return kw

    def polars_options(self) -> dict[str, str]:
        """Polars ``storage_options``: endpoint and region, and the credentials resolved now."""
        out = {"aws_region": self.region}
        if self.endpoint_url:
            out["aws_endpoint_url"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                out["aws_allow_http"] = "true"
        creds = self.credentials()
        if creds is not None:
            out["aws_access_key_id"] = creds.key
            out["aws_secret_access_key"] = creds.secret
            if creds.token:
                out["aws_session_token"] = creds.token
        return out


_CHAIN_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


def _chain_session(aio: bool = False) -> Any:
    """A botocore (or, for s3fs, aiobotocore) session: the standard AWS credential chain.

    One per process and environment, so credentials are resolved (and refreshed) once and
    s3fs's instance cache keeps working; a changed ``AWS_*`` variable gets a new session.
    """
    return _session_for(aio, tuple(os.environ.get(v) for v in _CHAIN_VARIABLES))


@cache
def _session_for(aio: bool, _env: tuple[str | None, ...]) -> Any:
    if aio:
        from aiobotocore.session import AioSession

        return AioSession()
    import botocore.session

    return botocore.session.Session()


def _chain_region() -> str | None:
    """The region of the AWS profile in use (``AWS_DEFAULT_REGION`` or the config file), if any."""
    try:
        return _chain_session().get_config_variable("region")
    except Exception:  # a malformed config file: the default region, and botocore says why later
        return None


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


# Filesystems that keep what is written after this process ends. Only these may receive
# rows that then leave the hot store (tier, archive --delete): memory://, and any protocol
# not named here (a cache, a zip file, http), would "move" rows into nothing.
PERSISTENT_PROTOCOLS = frozenset({"file", "s3", "gs", "gcs", "abfs", "abfss", "az", "adl", "hdfs", "webhdfs"})


def check_persistent(lake: Lake, why: str = "it would receive rows deleted from the hot store") -> None:
    """Raise :class:`ConfigError` unless ``lake`` is on a filesystem that persists."""
    if lake.protocol not in PERSISTENT_PROTOCOLS:
        allowed = ", ".join(p + "://" for p in sorted(PERSISTENT_PROTOCOLS))
        raise ConfigError(
            f"lake {redact_dsn(lake.url)} does not persist ({why}); use one of {allowed} (nothing was moved)"
        )


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
        fs.retries = 1  # s3fs's own retry loop off: botocore retries each request, retry() the operation
        return Lake(url=url, protocol="s3", fs=fs, root=bucket_key, s3=opts, retries=opts.retries)
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"lake URL {url!r}: {exc}") from None
    retries = getattr(settings, "s3_retries", DEFAULT_RETRIES) if settings else DEFAULT_RETRIES
    return Lake(url=url, protocol=proto, fs=fs, root=root.rstrip("/"), retries=retries)


# ----------------------------------------------------------------- store failures
#
# Object stores fail in a handful of ways (magsag.backends.retry sorts them). botocore
# retries each request on connection errors, throttling and 5xx answers; retry() below
# retries the whole operation only for what botocore could not (a body cut off mid-read,
# a filesystem without botocore). What is left, and transient failures that outlast the
# retries, become one-line StorageErrors that name the store and the action but never a
# credential.


def _scrub(lake: Lake, text: str) -> str:
    """One line, no credentials, not too long."""
    line = " ".join(str(text).split())
    if lake.s3 is not None:
        for secret in lake.s3.known_secrets():
            if secret and len(secret) >= 3:
                line = line.replace(secret, "***")
    line = redact_dsn(line)
    return line if len(line) <= 240 else line[:237] + "..."


def _reason(lake: Lake, exc: BaseException) -> str:
    resp = error_response(exc)
    if resp is not None and resp[0]:
        return _scrub(lake, resp[0])
    text = str(exc) or type(exc).__name__
    return _scrub(lake, text)


def _bucket(lake: Lake) -> str:
    return lake.root.split("/", 1)[0]


def store_error(lake: Lake, exc: BaseException, action: str, attempts: int = 1) -> StorageError:
    """Map a store failure to a one-line :class:`StorageError` (never quoting a credential).

    ``action`` says what was being done ("uploading events/dt=2026-11-01/..."); ``attempts``
    how many times the operation was tried (botocore's tries of the request count too).
    """
    if isinstance(exc, StorageError):
        return exc
    kind = store_fault(exc)
    if lake.s3 is not None and retried_by_botocore(exc):
        attempts = max(attempts, botocore_attempts(exc) or lake.s3.attempts)
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


def _retry_here(exc: BaseException) -> bool:
    """Transient, and not a request botocore already retried."""
    return is_transient_store_fault(exc) and not retried_by_botocore(exc)


def retry(lake: Lake, action: str, fn: Callable[..., T], *args: Any, retries: int | None = None, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` under the retry policy (magsag.backends.retry); map failures.

    ``fn`` must be idempotent (a PUT, a copy, a read, a delete). Raises only
    :class:`StorageError` subclasses: :class:`NotFoundError` for a missing object,
    :class:`BackendUnavailable` when the store cannot be reached, :class:`ConfigError`
    for access denied or a missing bucket.
    """
    n = 0 if lake.is_local else (lake.retries if retries is None else retries)
    policy = retrying(_retry_here, attempts=n + 1, log=log, what=f"lake {lake.url}: {action}")
    try:
        return policy(fn, *args, **kwargs)
    except StorageError:
        raise
    except Exception as exc:
        raise store_error(lake, exc, action, attempts=attempts_made(policy)) from exc


@contextmanager
def store_errors(lake: Lake, action: str) -> Iterator[None]:
    """Map any store failure inside the block to a one-line StorageError (no retry)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        raise store_error(lake, exc, action) from exc
