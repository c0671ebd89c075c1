"""Authentication: the credentials, and the token every thread shares."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from urllib.parse import urlparse

from swiftclient import client as swift
from swiftclient.exceptions import ClientException

from .errors import (AuthenticationError, AuthServiceUnreachable, PermanentSwiftError,
                     is_retryable_status)

try:
    from keystoneauth1 import exceptions as keystone_errors
except ImportError:  # Keystone support is the optional 'keystone' extra
    keystone_errors = None

_SECRET_FIELDS = ("key", "application_credential_secret", "preauth_token")
# The password of a URL's user information (http://user:password@host/).
URL_PASSWORD = re.compile(r"(://[^/\s:@]*:)[^/\s@]*@")
AUTH_VERSIONS = ("1", "1.0", "3", "3.0")
INTERFACES = ("public", "internal", "admin", "publicURL", "internalURL", "adminURL")


@dataclass(frozen=True)
class Credentials:
    """How to authenticate: TempAuth v1 (``auth_url``, ``user``, ``key``),
    Keystone v3 (password or application credential), or a pre-authenticated
    ``preauth_url`` and ``preauth_token``.  Secrets (a URL's password too)
    never appear in its repr."""

    auth_url: str | None = None
    user: str | None = None
    key: str | None = field(default=None, repr=False)
    auth_version: str | None = None
    project_name: str | None = None
    project_id: str | None = None
    project_domain_name: str | None = None
    project_domain_id: str | None = None
    user_domain_name: str | None = None
    user_domain_id: str | None = None
    region_name: str | None = None
    interface: str | None = None
    application_credential_id: str | None = None
    application_credential_secret: str | None = field(default=None, repr=False)
    preauth_url: str | None = None
    preauth_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None and not isinstance(value, str):
                shown = "a secret" if item.name in _SECRET_FIELDS else repr(value)
                raise ValueError(f"{item.name} must be text, not {type(value).__name__} "
                                 f"({shown})")
        for name in ("auth_url", "preauth_url"):
            url = getattr(self, name)
            if url and (urlparse(url).scheme not in ("http", "https")
                        or not urlparse(url).netloc):
                raise ValueError(f"{name} must be an http:// or https:// URL, not {url!r}")
        if self.auth_version and self.auth_version.lower().lstrip("v") not in AUTH_VERSIONS:
            raise ValueError(f"auth_version must be 1 (TempAuth) or 3 (Keystone v3), not "
                             f"{self.auth_version!r}")
        if self.interface and self.interface not in INTERFACES:
            raise ValueError(f"interface must be one of {', '.join(INTERFACES)}, not "
                             f"{self.interface!r}")

    def __repr__(self) -> str:
        shown = ", ".join(f"{item.name}={getattr(self, item.name)!r}"
                          for item in fields(self) if item.repr)
        return hide_url_passwords(f"{type(self).__name__}({shown})")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        """Read credentials from the variables the ``swift`` client reads."""
        env = os.environ if environ is None else environ

        def get(*names: str) -> str | None:
            for name in names:
                if env.get(name):
                    return env[name]
            return None

        if get("ST_AUTH"):
            return cls(auth_url=get("ST_AUTH"), user=get("ST_USER"), key=get("ST_KEY"),
                       auth_version=get("ST_AUTH_VERSION"),
                       preauth_url=get("OS_STORAGE_URL"), preauth_token=get("OS_AUTH_TOKEN"))
        return cls(
            auth_url=get("OS_AUTH_URL"),
            user=get("OS_USERNAME"),
            key=get("OS_PASSWORD"),
            auth_version=get("OS_IDENTITY_API_VERSION", "OS_AUTH_VERSION"),
            project_name=get("OS_PROJECT_NAME", "OS_TENANT_NAME"),
            project_id=get("OS_PROJECT_ID", "OS_TENANT_ID"),
            project_domain_name=get("OS_PROJECT_DOMAIN_NAME"),
            project_domain_id=get("OS_PROJECT_DOMAIN_ID"),
            user_domain_name=get("OS_USER_DOMAIN_NAME"),
            user_domain_id=get("OS_USER_DOMAIN_ID"),
            region_name=get("OS_REGION_NAME"),
            interface=get("OS_INTERFACE", "OS_ENDPOINT_TYPE"),
            application_credential_id=get("OS_APPLICATION_CREDENTIAL_ID"),
            application_credential_secret=get("OS_APPLICATION_CREDENTIAL_SECRET"),
            preauth_url=get("OS_STORAGE_URL"),
            preauth_token=get("OS_AUTH_TOKEN"),
        )

    @property
    def is_empty(self) -> bool:
        return not (self.auth_url or self.preauth_url or self.preauth_token)

    def or_environ(self, environ: Mapping[str, str] | None = None) -> Credentials:
        """These credentials, or the environment's when none were given."""
        return Credentials.from_environ(environ) if self.is_empty else self

    @property
    def keystone(self) -> bool:
        if self.auth_version:
            return self.auth_version.lstrip("v").startswith("3")
        return bool(self.application_credential_id or self.project_name or self.project_id
                    or (self.auth_url and urlparse(self.auth_url).path.rstrip("/")
                        .endswith("/v3")))

    @property
    def can_authenticate(self) -> bool:
        """Whether a fresh token can be obtained (so a 401 can be retried)."""
        if not self.auth_url:
            return False
        if self.application_credential_id:
            return bool(self.application_credential_secret)
        return bool(self.user and self.key)

    def secrets(self) -> list[str]:
        return [v for v in (getattr(self, f) for f in _SECRET_FIELDS) if v]

    def auth_arguments(self) -> tuple[tuple[str, str | None, str | None], dict]:
        """Positional and keyword arguments for ``swiftclient.client.get_auth``."""
        if not self.keystone:
            return (self.auth_url, self.user, self.key), {"auth_version": "1.0"}
        options = {
            "project_name": self.project_name,
            "project_id": self.project_id,
            "project_domain_name": self.project_domain_name,
            "project_domain_id": self.project_domain_id,
            "user_domain_name": self.user_domain_name,
            "user_domain_id": self.user_domain_id,
            "region_name": self.region_name,
            "endpoint_type": self.interface or "public",
            "service_type": "object-store",
        }
        if self.application_credential_id:
            options.update(auth_type="v3applicationcredential",
                           application_credential_id=self.application_credential_id,
                           application_credential_secret=self.application_credential_secret)
        elif not (self.user_domain_name or self.user_domain_id):
            options["user_domain_id"] = "default"
        if not (self.project_domain_name or self.project_domain_id) and \
                (self.project_name and not self.application_credential_id):
            options["project_domain_id"] = "default"
        options = {k: v for k, v in options.items() if v is not None}
        return (self.auth_url, self.user, self.key), {"auth_version": "3",
                                                      "os_options": options}

    def describe(self) -> str:
        """Where and as whom, for messages (never the secrets)."""
        if self.auth_url:
            who = self.user or self.application_credential_id or "?"
            return hide_url_passwords(f"{'Keystone v3' if self.keystone else 'TempAuth'} at "
                                      f"{self.auth_url} as {who}")
        return hide_url_passwords(f"pre-authenticated token for {self.preauth_url}")


def hide_url_passwords(text: str) -> str:
    """*text* with the password of every URL in it (http://user:password@host/)
    replaced by ``***``."""
    return URL_PASSWORD.sub(r"\1***@", text)


class TokenSource:
    """One storage URL and token shared by every thread; refreshed on demand."""

    def __init__(self, credentials: Credentials, tls: dict, timeout: float) -> None:
        self.credentials = credentials
        self._tls = tls
        self._timeout = timeout
        self._lock = threading.Lock()
        self._url = credentials.preauth_url
        self._token = credentials.preauth_token
        self._seen = {self._token} if self._token else set()
        if not (self._url and self._token) and not credentials.can_authenticate:
            raise AuthenticationError(
                "no usable credentials: give auth_url with user and key (TempAuth or "
                "Keystone v3), an application credential, or preauth_url and "
                "preauth_token (or the ST_* / OS_* environment variables)",
                operation="authentication")

    def current(self, timeout: float) -> tuple[str, str]:
        with self._lock:
            if not (self._url and self._token):
                self._authenticate(timeout)
            return self._url, self._token

    def secrets(self) -> list[str]:
        """Every token this process has held (to scrub them from messages)."""
        return list(self._seen)

    def invalidate(self, token: str) -> bool:
        """Forget a rejected *token*; whether a new one can be obtained."""
        if not self.credentials.can_authenticate:
            return False
        with self._lock:
            if self._token == token:
                self._token = None
        return True

    def _authenticate(self, timeout: float) -> None:
        """Get a token.  Errors are raised outside ``except`` blocks so that no
        exception context (which may hold the request and its key) is chained."""
        args, kwargs = self.credentials.auth_arguments()
        where = self.credentials.describe()
        failure: Exception | None = None
        try:
            url, token = swift.get_auth(*args, timeout=min(timeout, self._timeout),
                                        **kwargs, **self._tls)
        except ClientException as exc:
            failure = self._classify_client_error(exc, where)
        except Exception as exc:
            if keystone_errors is None or not isinstance(exc, keystone_errors.ClientException):
                raise
            failure = self._classify_keystone_error(exc, where)
        if failure is not None:
            raise failure
        self._url = self.credentials.preauth_url or url
        self._token = token
        self._seen.add(token)

    def _classify_client_error(self, exc: ClientException, where: str) -> Exception:
        status, message = exc.http_status, str(exc.msg)
        if status in (401, 403) or message.startswith("Unauthorized"):
            return AuthenticationError(f"credentials rejected by {where}",
                                       operation="authentication", status=status,
                                       transaction_id=exc.transaction_id)
        if message.startswith("Endpoint for"):
            return AuthenticationError(
                f"{where}: the Keystone catalogue has no object-store endpoint for region "
                f"{self.credentials.region_name or '(any)'} and interface "
                f"{self.credentials.interface or 'public'}", operation="authentication")
        if is_retryable_status(status) or "Unable to establish connection" in message:
            return AuthServiceUnreachable(f"{where}: {message}")
        return AuthenticationError(f"authentication failed with {where}: {message}",
                                   operation="authentication", status=status)

    @staticmethod
    def _classify_keystone_error(exc: Exception, where: str) -> Exception:
        status = getattr(exc, "http_status", None)
        if isinstance(exc, keystone_errors.SSLError):
            return PermanentSwiftError(f"TLS verification of {where} failed (check cacert)",
                                       operation="authentication")
        if isinstance(exc, keystone_errors.ConnectionError) or (status or 0) >= 500:
            return AuthServiceUnreachable(f"{where}: {type(exc).__name__}")
        if status in (401, 403, 404):
            return AuthenticationError(f"credentials rejected by {where}",
                                       operation="authentication", status=status)
        return AuthenticationError(f"authentication failed with {where} "
                                   f"({type(exc).__name__})", operation="authentication",
                                   status=status)
