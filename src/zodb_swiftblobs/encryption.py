"""Client-side encryption of blob objects: the cipher format (no Swift here).

A :class:`Keyring` holds one or more 256-bit master keys; the first one
encrypts, every one decrypts (key rotation).  Each object gets a random salt
and its own key, HKDF-SHA256(master key, salt).  Its plaintext is cut into
chunks of ``chunk_size`` bytes, each encrypted with AES-256-GCM under a nonce
made of the chunk's index and a last-chunk flag (the STREAM construction:
reordered, truncated or extended ciphertexts fail authentication).  The
ciphertext is the chunks' ciphertexts, each followed by its 16-byte tag, so
its size is a function of the plaintext's size alone, and any byte range of
it can be produced from the chunks that contain it.

The checksum recorded for an encrypted object (see
:mod:`zodb_swiftblobs.swift.checksums`) is an HMAC-SHA256 of its plaintext
under a second key, HKDF-SHA256(master key, salt) with other context: it
tells nothing of the plaintext (not even whether two objects hold the same)
to whoever lacks the master key.

An object's parameters travel in a short text (:attr:`ObjectCipher.header`):
``v1 <key id> <salt in base64> <chunk size>``.  A key id names a key
without revealing it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import BinaryIO

CHUNK_SIZE = 64 << 10
TAG_SIZE = 16
SALT_SIZE = 16
KEY_SIZE = 32
VERSION = "v1"
OBJECT_KEY_INFO = b"zodb-swiftblobs blob v1"
CHECKSUM_KEY_INFO = b"zodb-swiftblobs checksum v1"
KEY_ID_CONTEXT = b"zodb-swiftblobs key id\0"
ENVIRONMENT_VARIABLE = "ZODB_SWIFTBLOBS_ENCRYPTION_KEYS"
KEY_SEPARATORS = re.compile(r"[\s,]+")
HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
MISSING_PACKAGE = ("encryption needs the 'cryptography' package: "
                   "pip install zodb-swiftblobs[encryption]")


class DecryptionFailed(Exception):
    """Ciphertext could not be decrypted: it fails authentication (wrong key,
    tampered or truncated), or its parameters are malformed."""


class KeyNotConfigured(DecryptionFailed):
    """The ciphertext was encrypted with a key the keyring does not hold."""


def key_id(key: bytes) -> str:
    """The public name of a master key (16 hex digits; reveals nothing of it)."""
    return hashlib.sha256(KEY_ID_CONTEXT + key).hexdigest()[:16]


def parse_key(text: str, position: int = 1) -> bytes:
    """The 32 bytes of a key written as base64 (standard or URL-safe) or as 64
    hex digits.  The ValueError for anything else never quotes the text."""
    text = text.strip()
    if HEX_KEY.fullmatch(text):
        return bytes.fromhex(text)
    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = None
    if key is None or len(key) != KEY_SIZE:
        found = "is not valid base64" if key is None else f"decodes to {len(key)} bytes"
        raise ValueError(f"encryption key #{position} ({len(text)} characters) {found}: "
                         f"a key is {KEY_SIZE} bytes, written in base64 or as 64 hex "
                         "digits (make one with: python -c \"import base64, os; "
                         "print(base64.b64encode(os.urandom(32)).decode())\")")
    return key


def _cryptography():
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    except ImportError:
        raise ImportError(MISSING_PACKAGE) from None
    return hashes, AESGCM, HKDF


class Keyring:
    """Master keys: the first encrypts new objects, every one decrypts.
    Its repr shows key ids only."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        for key in keys:
            if len(key) != KEY_SIZE:
                raise ValueError(f"an encryption key is {KEY_SIZE} bytes, not {len(key)}")
        _cryptography()
        self._keys: dict[str, bytes] = {}
        for key in keys:
            self._keys.setdefault(key_id(key), key)
        self.encrypting_key_id = key_id(keys[0])

    @classmethod
    def from_text(cls, texts: str | Iterable[str]) -> Keyring:
        """A keyring from key texts, each possibly holding several keys
        separated by commas or whitespace; the first key encrypts."""
        if isinstance(texts, str):
            texts = [texts]
        words = [word for text in texts for word in KEY_SEPARATORS.split(text) if word]
        if not words:
            raise ValueError("no encryption key given")
        return cls([parse_key(word, position) for position, word in enumerate(words, 1)])

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys, the encrypting key's first."""
        return [self.encrypting_key_id] + [i for i in self._keys if i != self.encrypting_key_id]

    def __repr__(self) -> str:
        return f"<Keyring key ids {', '.join(self.key_ids)} (the first encrypts)>"

    def new_cipher(self) -> ObjectCipher:
        """The cipher of a new object: the encrypting key, a fresh salt."""
        return ObjectCipher(self.encrypting_key_id, self._keys[self.encrypting_key_id],
                            os.urandom(SALT_SIZE), CHUNK_SIZE)

    def cipher_for(self, header: str) -> ObjectCipher:
        """The cipher an object's *header* describes.  KeyNotConfigured when its
        key is not here; DecryptionFailed when the header is malformed."""
        parts = header.split()
        try:
            version, identifier, salt, chunk_size = parts
            salt_bytes = base64.b64decode(salt, validate=True)
            chunk = int(chunk_size)
        except (ValueError, binascii.Error):
            raise DecryptionFailed("malformed encryption metadata") from None
        if version != VERSION or len(salt_bytes) != SALT_SIZE or not 0 < chunk <= 1 << 30:
            raise DecryptionFailed(f"unsupported encryption metadata ({version})")
        if identifier not in self._keys:
            raise KeyNotConfigured(f"it is encrypted with key id {identifier}; configured key "
                                   f"ids: {', '.join(self.key_ids)}")
        return ObjectCipher(identifier, self._keys[identifier], salt_bytes, chunk)


def keyring_from(keys: str | Sequence[str] | None,
                 environ: Mapping[str, str] | None = None) -> Keyring | None:
    """The keyring of configured key texts; when none are given, the one of the
    ``ZODB_SWIFTBLOBS_ENCRYPTION_KEYS`` environment variable; else None."""
    if isinstance(keys, str):
        keys = [keys]
    if not keys or not any(text.strip() for text in keys):
        keys = [(os.environ if environ is None else environ).get(ENVIRONMENT_VARIABLE, "")]
        if not keys[0].strip():
            return None
    return Keyring.from_text(keys)


class ObjectCipher:
    """The encryption of one object: master key, salt and chunk size."""

    def __init__(self, key_identifier: str, master_key: bytes, salt: bytes,
                 chunk_size: int) -> None:
        hashes, AESGCM, HKDF = _cryptography()

        def derive(info: bytes) -> bytes:
            return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt,
                        info=info).derive(master_key)
        self._aead = AESGCM(derive(OBJECT_KEY_INFO))
        self._checksum_key = derive(CHECKSUM_KEY_INFO)
        self.key_id = key_identifier
        self.salt = salt
        self.chunk_size = chunk_size

    def __repr__(self) -> str:
        return f"<ObjectCipher key id {self.key_id}>"

    @property
    def header(self) -> str:
        """The parameters to store beside the ciphertext (no secret in them)."""
        return (f"{VERSION} {self.key_id} {base64.b64encode(self.salt).decode()} "
                f"{self.chunk_size}")

    def keyed_hash(self) -> hmac.HMAC:
        """A new HMAC-SHA256 under this object's checksum key (derived apart
        from its encryption key): a checksum of its plaintext that tells
        nothing of the plaintext to whoever lacks the master key."""
        return hmac.new(self._checksum_key, digestmod=hashlib.sha256)

    def chunks(self, plaintext_size: int) -> int:
        """How many chunks a plaintext of *plaintext_size* bytes makes (at least one)."""
        return max(1, -(-plaintext_size // self.chunk_size))

    def ciphertext_size(self, plaintext_size: int) -> int:
        """The size of the ciphertext of *plaintext_size* bytes of plaintext."""
        return plaintext_size + TAG_SIZE * self.chunks(plaintext_size)

    @staticmethod
    def _nonce(index: int, last: bool) -> bytes:
        return index.to_bytes(8, "big") + (1 if last else 0).to_bytes(4, "big")

    def encrypt_chunk(self, index: int, plaintext: bytes, last: bool) -> bytes:
        """The ciphertext and tag of chunk *index* (*last*: the final chunk)."""
        return self._aead.encrypt(self._nonce(index, last), plaintext, None)

    def decrypt_chunk(self, index: int, ciphertext: bytes, last: bool) -> bytes:
        """The plaintext of chunk *index*; DecryptionFailed if it does not
        authenticate (wrong key, tampered, reordered, truncated)."""
        from cryptography.exceptions import InvalidTag
        try:
            if len(ciphertext) < TAG_SIZE:
                raise InvalidTag()
            return self._aead.decrypt(self._nonce(index, last), ciphertext, None)
        except InvalidTag:
            raise DecryptionFailed(f"authentication failed at chunk {index}: wrong key or "
                                   "tampered object") from None

    def reader(self, file: BinaryIO, plaintext_size: int) -> EncryptedReader:
        """A readable, seekable view of the ciphertext of the open *file*."""
        return EncryptedReader(file, self, plaintext_size)

    def writer(self, out: BinaryIO) -> DecryptingWriter:
        """A writer decrypting the ciphertext written to it into *out*."""
        return DecryptingWriter(out, self)

    def scattered_writer(self, ciphertext_size: int,
                         write_at: Callable[[bytes, int], None]) -> ScatteredDecryptor:
        """A writer decrypting a ciphertext of *ciphertext_size* bytes that
        arrives in pieces at any offsets; see :class:`ScatteredDecryptor`."""
        return ScatteredDecryptor(self, ciphertext_size, write_at)


class EncryptedReader:
    """A seekable, readable view of the ciphertext of an open plaintext file
    of *plaintext_size* bytes.  Reading at any offset encrypts the chunks
    that hold it; memory holds one encrypted chunk.  Closes the file."""

    def __init__(self, file, cipher: ObjectCipher, plaintext_size: int) -> None:
        self._file, self._cipher, self._plaintext_size = file, cipher, plaintext_size
        self.length = cipher.ciphertext_size(plaintext_size)
        self._last = cipher.chunks(plaintext_size) - 1
        self._pos = 0
        self._sealed: tuple[int, bytes] = (-1, b"")

    def __enter__(self) -> EncryptedReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.length}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = self.length if size is None or size < 0 else min(self.length, self._pos + size)
        step = self._cipher.chunk_size + TAG_SIZE
        parts = []
        while self._pos < end:
            index, within = divmod(self._pos, step)
            piece = self._chunk(index)[within:within + end - self._pos]
            parts.append(piece)
            self._pos += len(piece)
        return b"".join(parts)

    def _chunk(self, index: int) -> bytes:
        if self._sealed[0] != index:
            start = index * self._cipher.chunk_size
            expected = min(self._cipher.chunk_size, self._plaintext_size - start)
            self._file.seek(start)
            plaintext = self._file.read(expected)
            if len(plaintext) != expected:
                raise OSError(f"the file shrank while it was being encrypted "
                              f"(chunk {index})")
            self._sealed = (index, self._cipher.encrypt_chunk(index, plaintext,
                                                              index == self._last))
        return self._sealed[1]


class DecryptingWriter:
    """Writes the plaintext of ciphertext written to it into *out*, a chunk at
    a time (it holds at most one chunk).  :meth:`finish` decrypts the last
    chunk; ciphertext that is cut short or extended fails authentication."""

    def __init__(self, out, cipher: ObjectCipher) -> None:
        self._out, self._cipher = out, cipher
        self._step = cipher.chunk_size + TAG_SIZE
        self._pending = bytearray()
        self._index = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if len(self._pending) == self._step:
                self._emit(last=False)  # more bytes follow: it was not the last chunk
            taken = self._step - len(self._pending)
            self._pending += view[:taken]
            view = view[taken:]
        return len(data)

    def finish(self) -> None:
        """Decrypt and write the last chunk (authenticating the end)."""
        self._emit(last=True)

    def _emit(self, last: bool) -> None:
        self._out.write(self._cipher.decrypt_chunk(self._index, bytes(self._pending), last))
        self._pending.clear()
        self._index += 1


class ScatteredDecryptor:
    """Decrypts a ciphertext of *size* bytes that arrives in pieces, each at
    its offset, in any order and from several threads at once: a chunk is
    decrypted as soon as all of its bytes have arrived, and its plaintext
    handed to ``write_at(plaintext, offset)``.  Memory holds the chunks that
    have partly arrived.  :meth:`finish` checks that every chunk was."""

    def __init__(self, cipher: ObjectCipher, size: int,
                 write_at: Callable[[bytes, int], None]) -> None:
        self._cipher, self._write_at = cipher, write_at
        self._step = cipher.chunk_size + TAG_SIZE
        self._size = size
        self._chunks = -(-size // self._step)
        self._partial: dict[int, tuple[bytearray, int]] = {}
        self._decrypted = 0
        self._lock = threading.Lock()

    def write_at(self, data: bytes, offset: int) -> None:
        """Take the ciphertext *data* found at *offset*."""
        view = memoryview(data)
        while view:
            if offset >= self._size:
                raise DecryptionFailed("more ciphertext than the object has")
            index, within = divmod(offset, self._step)
            length = min(self._step, self._size - index * self._step)
            taken = min(len(view), length - within)
            if taken == length:
                self._decrypt(index, bytes(view[:taken]))
            else:
                self._add(index, within, view[:taken], length)
            view, offset = view[taken:], offset + taken

    def finish(self) -> None:
        """DecryptionFailed unless every chunk has been decrypted."""
        if not self._chunks or self._decrypted != self._chunks:
            raise DecryptionFailed("the ciphertext is cut short")

    def _add(self, index: int, within: int, piece: memoryview, length: int) -> None:
        with self._lock:
            buffer, filled = self._partial.pop(index, None) or (bytearray(length), 0)
            buffer[within:within + len(piece)] = piece
            filled += len(piece)
            if filled < length:
                self._partial[index] = (buffer, filled)
                return
        self._decrypt(index, bytes(buffer))

    def _decrypt(self, index: int, ciphertext: bytes) -> None:
        plaintext = self._cipher.decrypt_chunk(index, ciphertext, index == self._chunks - 1)
        self._write_at(plaintext, index * self._cipher.chunk_size)
        with self._lock:
            self._decrypted += 1
