"""The cipher of a downloaded object, and decryption failures told as the
errors of this package."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from ..encryption import DecryptionFailed, Keyring, KeyNotConfigured, ObjectCipher
from .errors import DecryptionError, MissingKeyError
from .objects import encryption_header

Result = TypeVar("Result")


def cipher_of(name: str, metadata: Mapping[str, str],
              keyring: Keyring | None) -> ObjectCipher | None:
    """The cipher of object *name* from its *metadata* (None for a plain
    object).  MissingKeyError when its key is not in *keyring*,
    DecryptionError when its encryption metadata is malformed."""
    header = encryption_header(metadata)
    if header is None:
        return None
    if keyring is None:
        key = header.split()[1] if len(header.split()) > 1 else "?"
        raise MissingKeyError(f"it is encrypted (key id {key}) and no encryption key is "
                              "configured", operation="decryption", name=name)
    return decrypting(name, lambda: keyring.cipher_for(header))


def decrypting(name: str, step: Callable[[], Result]) -> Result:
    """Run *step*; a decryption failure becomes a DecryptionError (or a
    MissingKeyError) naming object *name*."""
    failure = None
    try:
        return step()
    except KeyNotConfigured as exc:
        failure = MissingKeyError(str(exc), operation="decryption", name=name)
    except DecryptionFailed as exc:
        failure = DecryptionError(str(exc), operation="decryption", name=name)
    raise failure
