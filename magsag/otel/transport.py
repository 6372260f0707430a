"""OTLP/HTTP with protobuf bodies: gzip, retries with backoff on 429/5xx, one-line errors.

Headers (tokens) are sent, never shown: error messages name the endpoint without its
credentials and quote at most the first line of the server's reply.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

import urllib3
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from magsag.backends.errors import BackendUnavailable, ConfigError, redact_dsn

RETRY_STATUSES = frozenset({429, 502, 503, 504})
PROTOBUF = "application/x-protobuf"


class EndpointRefused(BackendUnavailable):
    """The endpoint answered with an error that another try will not fix (4xx other than 429)."""


class _Retryable(Exception):
    """A failure worth another try (connection trouble, 429, 502-504)."""


def parse_headers(text: str | None) -> dict[str, str]:
    """``key=value,key2=value2`` (the OTEL_EXPORTER_OTLP_HEADERS format; values URL-encoded)."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConfigError("MAGSAG_OTEL_HEADERS: each header is key=value, separated by commas")
        k, v = part.split("=", 1)
        if not k.strip():
            raise ConfigError("MAGSAG_OTEL_HEADERS: a header has an empty name")
        out[unquote(k.strip())] = unquote(v.strip())
    return out


def signal_url(endpoint: str, signal: str = "traces") -> str:
    """``http://host:4318`` -> ``http://host:4318/v1/traces``; a full signal URL stays as it is."""
    endpoint = endpoint.strip()
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--endpoint: {redact_dsn(endpoint)!r} is not an http:// or https:// URL")
    path = parts.path.rstrip("/")
    if not path.endswith(f"/v1/{signal}"):
        path = f"{path}/v1/{signal}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def shown(url: str) -> str:
    """The URL as printed: no user/password, no query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass
class OtlpHttp:
    """A pooled OTLP/HTTP sender for one signal URL."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    compress: bool = True

    def __post_init__(self) -> None:
        self._pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=self.timeout))
        self._base = {**self.headers, "Content-Type": PROTOBUF}
        if self.compress:
            self._base["Content-Encoding"] = "gzip"

    def close(self) -> None:
        self._pool.clear()

    def _post_once(self, body: bytes) -> bytes:
        try:
            resp = self._pool.request("POST", self.url, body=body, headers=self._base, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            raise _Retryable(f"cannot reach {shown(self.url)}: {_reason(exc)}") from None
        if 200 <= resp.status < 300:
            return resp.data
        first = _first_line(resp.data)
        message = f"{shown(self.url)} answered HTTP {resp.status}" + (f": {first}" if first else "")
        if resp.status in RETRY_STATUSES:
            raise _Retryable(message)
        if 400 <= resp.status < 500:
            raise EndpointRefused(message)
        raise BackendUnavailable(message)

    def post(self, payload: bytes) -> tuple[bytes, int]:
        """Send one request body; return the reply body and the bytes sent."""
        body = gzip.compress(payload, compresslevel=5) if self.compress else payload
        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(max(1, self.retries + 1)),
            wait=wait_exponential(multiplier=self.backoff, max=self.max_backoff),
            reraise=False,
        )
        try:
            data = retrying(self._post_once, body)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise BackendUnavailable(f"{last} (after {self.retries + 1} attempts)") from None
        return data, len(body)


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    if "Connection refused" in text or "ConnectionRefused" in type(reason).__name__:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return redact_dsn(text.split(": ", 1)[-1])[:200]


def _first_line(data: bytes) -> str:
    try:
        text = data.decode("utf-8", "replace").strip()
    except Exception:
        return ""
    if not text or (not text.isprintable() and "\n" not in text):
        return ""
    return redact_dsn(text.splitlines()[0])[:200]


def env_endpoint() -> str | None:
    return (
        os.environ.get("MAGSAG_OTEL_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    )


def env_headers() -> dict[str, str]:
    return parse_headers(
        os.environ.get("MAGSAG_OTEL_HEADERS")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS")
    )
