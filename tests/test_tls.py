"""TLS options against the embedded Swift behind a TLS-terminating forwarder."""

import contextlib
import datetime
import ipaddress
import logging
import socket
import ssl
import threading
import time
from urllib.parse import urlparse

import pytest
from conftest import assert_secret_free
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from zodb_swiftblobs.swift import Credentials, PermanentSwiftError, SwiftContainer


def self_signed_certificate(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class TLSForwarder:
    """Accept TLS on a free loopback port and pipe plain bytes to *target_port*."""

    def __init__(self, target_port, cert, key):
        self.target_port = target_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets, self.threads = [], []
        self._start(self._accept)

    def _start(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._start(self._serve, client)

    def _serve(self, client):
        try:
            secure = self.context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError):
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        self.sockets += [secure, upstream]
        self._start(self._pipe, upstream, secure)
        self._pipe(secure, upstream)

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        """Wake every thread (shutdown), wait for them, then close the sockets.
        A socket closed while a thread still reads or writes it frees its
        descriptor for reuse, and the thread's next write would land in
        whatever file or pipe got that number."""
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in self.threads), "a forwarder hangs"
        for sock in [self.listener, *self.sockets]:
            sock.close()


@pytest.fixture(scope="module")
def tls(devswift, tmp_path_factory):
    cert, key = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    settings = devswift.settings()
    forwarder = TLSForwarder(urlparse(settings.auth_url).port, cert, key)
    base = f"https://127.0.0.1:{forwarder.port}"
    credentials = Credentials(auth_url=f"{base}/auth/v1.0", user=settings.user,
                              key=settings.key,
                              preauth_url=f"{base}{urlparse(settings.storage_url).path}")
    yield credentials, cert
    forwarder.close()


def roundtrip(container, tmp_path):
    (tmp_path / "f").write_bytes(b"over TLS")
    container.upload("tls", str(tmp_path / "f"))
    container.download("tls", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == b"over TLS"


def test_private_ca_bundle_verifies(tls, container_name, tmp_path, caplog):
    credentials, cert = tls
    container = SwiftContainer(credentials, container_name, cacert=cert)
    roundtrip(container, tmp_path)
    assert "verification is disabled" not in caplog.text
    container.close()


def test_unverifiable_certificate_fails_at_once(tls, container_name):
    credentials, _ = tls
    container = SwiftContainer(credentials, container_name, deadline=30)
    started = time.monotonic()
    with pytest.raises(PermanentSwiftError) as info:
        container.ensure_container()
    assert time.monotonic() - started < 5, "a TLS verification failure is not retried"
    assert "TLS" in str(info.value) and "certificate" in str(info.value).lower()
    assert_secret_free(info.value, credentials.key)
    container.close()


def test_insecure_works_only_when_asked_and_warns(tls, container_name, tmp_path, caplog):
    credentials, _ = tls
    caplog.set_level(logging.WARNING)
    container = SwiftContainer(credentials, container_name, insecure=True)
    assert "TLS certificate verification is disabled" in caplog.text
    roundtrip(container, tmp_path)
    container.close()
