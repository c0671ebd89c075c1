"""The errors of the Swift access layer, and which HTTP statuses are worth retrying.

Messages name the operation, the object and Swift's transaction id, and never
carry a secret.  The classes without ``Error`` in their name are signals
between the modules of this package: they never leave it.
"""

from __future__ import annotations

# Statuses below 500 that say "try again later".
RETRYABLE_STATUSES = frozenset({408, 429, 498})


def is_retryable_status(status: int | None) -> bool:
    """Whether an HTTP *status* is a temporary failure (a retry may succeed)."""
    return status is not None and (status in RETRYABLE_STATUSES or status >= 500)


class SwiftError(Exception):
    """A Swift operation failed.  ``operation``, ``name``, ``status`` and
    ``transaction_id`` say which, on what, and how."""

    def __init__(self, message: str, *, operation: str = "", name: str = "",
                 status: int | None = None, transaction_id: str | None = None) -> None:
        self.operation = operation
        self.name = name
        self.status = status
        self.transaction_id = transaction_id
        details = [f"status {status}" if status else "", f"transaction {transaction_id}"
                   if transaction_id else ""]
        details = ", ".join(d for d in details if d)
        subject = f"Swift {operation} of {name!r}" if name else f"Swift {operation}"
        super().__init__(f"{subject}: {message}" + (f" ({details})" if details else ""))


class NotFoundError(SwiftError):
    """The object (or container) does not exist."""


class SwiftUnavailableError(SwiftError):
    """Swift could not be reached or answered with a temporary failure
    (network, 5xx, rate limiting, deadline exceeded).  Trying later may work."""


class PermanentSwiftError(SwiftError):
    """Swift refused the request; retrying will not help."""


class AuthenticationError(PermanentSwiftError):
    """Credentials were rejected, or a pre-authenticated token expired."""


class ChecksumMismatchError(PermanentSwiftError):
    """The bytes stored or received do not match their checksum or length."""


class DecryptionError(PermanentSwiftError):
    """An encrypted object cannot be decrypted: it fails authentication (wrong
    key, tampered or truncated) or its encryption metadata is malformed."""


class MissingKeyError(DecryptionError):
    """An object is encrypted with a key that is not configured."""


class AuthServiceUnreachable(Exception):
    """The auth service could not be reached; the retry loop tries again."""


class DownloadRestart(Exception):
    """A resumed download found a different object; the retry loop starts it over."""


class NotLargeObject(Exception):
    """A large-object delete found a plain object."""


class LocalFileFailure(Exception):
    """Reading the local file being uploaded failed (not a network error)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class SendTimeUp(Exception):
    """An upload body was still being sent when the operation's time was up."""
