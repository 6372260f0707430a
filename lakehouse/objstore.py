"""Opening a lake root on any fsspec URL: a local folder, ``s3://`` (any S3-compatible
server), or another fsspec protocol.

:func:`open_lake` turns a URL and the settings into a :class:`Lake`: the fsspec
filesystem, the root path as that filesystem names it, and the options other engines
(Polars, DuckDB) need to reach the same place. Credentials come from the settings
(``MAGSAG_STORAGE_S3_*``) or the usual AWS variables and never appear in messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.errors import ConfigError
from lakehouse import layout

if TYPE_CHECKING:
    import fsspec

    from lakehouse.settings import StorageSettings

DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3-compatible server (secrets kept out of ``repr``)."""

    endpoint_url: str | None = None
    region: str = DEFAULT_REGION
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: StorageSettings | None) -> S3Options:
        def secret(value: Any) -> str | None:
            return value.get_secret_value() if value is not None else None

        endpoint = settings.s3_endpoint_url if settings else None
        region = (settings.s3_region if settings else None) or os.environ.get("AWS_REGION") or DEFAULT_REGION
        key = (secret(settings.s3_access_key_id) if settings else None) or os.environ.get("AWS_ACCESS_KEY_ID")
        sec = (secret(settings.s3_secret_access_key) if settings else None) or os.environ.get("AWS_SECRET_ACCESS_KEY")
        return cls(endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL"), region=region, key=key, secret=sec)

    def s3fs_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"client_kwargs": {"region_name": self.region}}
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
            from lakehouse.settings import load_settings

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
        return Lake(url=url, protocol="s3", fs=fs, root=bucket_key, s3=opts)
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"lake URL {url!r}: {exc}") from None
    return Lake(url=url, protocol=proto, fs=fs, root=root.rstrip("/"))
