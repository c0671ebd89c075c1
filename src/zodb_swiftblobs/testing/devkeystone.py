"""A real OpenStack Keystone (v3, SQLite, Fernet tokens) in front of the embedded Swift.

Used by :class:`zodb_swiftblobs.testing.devswift.DevSwift` with ``keystone=True`` to
test Keystone v3 authentication (password and application credential) with no
cluster of one's own.  Needs the PyPI packages ``keystone`` and
``keystonemiddleware`` (the ``test`` extra).
"""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass, field

REGION = "RegionOne"
PROJECT = "demo"
USER = "demo"
DOMAIN = "Default"
SERVICE_USER = "swift"
SERVICE_PROJECT = "service"


@dataclass(frozen=True)
class KeystoneSettings:
    """How a client authenticates against the embedded Keystone."""

    auth_url: str
    user: str
    password: str = field(repr=False)
    project_name: str
    application_credential_id: str
    application_credential_secret: str = field(repr=False)
    region_name: str = REGION
    domain_name: str = DOMAIN

    def exports(self) -> str:
        """Shell ``export`` lines in the OpenStack client's variables."""
        return "".join(f"export {name}={shlex.quote(value)}\n"
                       for name, value in self.environ().items())

    def environ(self) -> dict[str, str]:
        return {
            "OS_AUTH_URL": self.auth_url, "OS_IDENTITY_API_VERSION": "3",
            "OS_USERNAME": self.user, "OS_PASSWORD": self.password,
            "OS_PROJECT_NAME": self.project_name, "OS_USER_DOMAIN_NAME": self.domain_name,
            "OS_PROJECT_DOMAIN_NAME": self.domain_name, "OS_REGION_NAME": self.region_name,
            "OS_INTERFACE": "public",
        }


PACKAGES = ("keystone", "keystonemiddleware", "keystoneauth1", "keystoneclient")


def missing_packages() -> list[str]:
    """The packages the embedded Keystone needs that cannot be imported here
    (their distributions' names)."""
    missing = []
    for package in PACKAGES:
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append("python-keystoneclient" if package == "keystoneclient" else package)
    return missing


def write_config(directory: str) -> str:
    """Write keystone.conf for a Keystone rooted at *directory*; return its path."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, "keystone.conf")
    with open(path, "w") as f:
        f.write(
            "[DEFAULT]\n"
            f"log_file = {os.path.join(directory, 'keystone.log')}\n"
            "use_stderr = false\n"
            "[database]\n"
            f"connection = sqlite:///{os.path.join(directory, 'keystone.db')}\n"
            "sqlite_synchronous = false\n"
            "[token]\nprovider = fernet\n"
            f"[fernet_tokens]\nkey_repository = {os.path.join(directory, 'fernet-keys')}\n"
            f"[credential]\nkey_repository = {os.path.join(directory, 'credential-keys')}\n"
            # Few bcrypt rounds: each password check costs 3 ms instead of 0.7 s.
            "[identity]\npassword_hash_rounds = 4\nmax_password_length = 72\n"
            # Without a cache every token validation runs hundreds of SQLite queries.
            "[cache]\nenabled = true\nbackend = dogpile.cache.memory\n"
        )
    return path


def initialize(config: str, port: int, admin_password: str, env: dict[str, str]) -> None:
    """Create the database, key repositories and the admin user and endpoints."""
    import pwd
    import grp

    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    manage = [sys.executable, "-c", "import sys; from keystone.cmd.manage import main; "
              "sys.exit(main())", "--config-file", config]
    owner = ["--keystone-user", user, "--keystone-group", group]
    setup = [subprocess.Popen(manage + command, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
             for command in (["db_sync"], ["fernet_setup", *owner],
                             ["credential_setup", *owner])]
    for process in setup:
        _check(process.args, process.communicate()[0], process.returncode)
    url = f"http://127.0.0.1:{port}/v3"
    bootstrap = subprocess.run(
        manage + ["bootstrap", "--bootstrap-username", "admin", "--bootstrap-project-name", "admin",
                  "--bootstrap-role-name", "admin", "--bootstrap-service-name", "keystone",
                  "--bootstrap-region-id", REGION, "--bootstrap-public-url", url,
                  "--bootstrap-internal-url", url],
        env={**env, "OS_BOOTSTRAP_PASSWORD": admin_password},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _check(bootstrap.args, bootstrap.stdout, bootstrap.returncode)


def _check(args, output: bytes, returncode: int) -> None:
    if returncode:
        command = next((a for a in args[5:] if not a.startswith("-")), "keystone-manage")
        raise RuntimeError(f"keystone-manage {command} failed:\n"
                           f"{output.decode(errors='replace')[-2000:]}")


def register(port: int, proxy_port: int, admin_password: str, service_password: str,
             user_password: str) -> dict[str, str]:
    """Register Swift, a service user and a demo user with an application credential."""
    from keystoneauth1 import session
    from keystoneauth1.identity import v3
    from keystoneclient.v3 import client

    auth_url = f"http://127.0.0.1:{port}/v3"
    admin = client.Client(session=session.Session(auth=v3.Password(
        auth_url=auth_url, username="admin", password=admin_password, project_name="admin",
        user_domain_id="default", project_domain_id="default")))
    roles = {role.name: role for role in admin.roles.list()}
    service_project = admin.projects.create(SERVICE_PROJECT, domain="default")
    demo_project = admin.projects.create(PROJECT, domain="default")
    service_user = admin.users.create(SERVICE_USER, domain="default",
                                      password=service_password,
                                      default_project=service_project)
    admin.roles.grant(roles["admin"], user=service_user, project=service_project)
    admin.roles.grant(roles["service"], user=service_user, project=service_project)
    demo_user = admin.users.create(USER, domain="default", password=user_password,
                                   default_project=demo_project)
    admin.roles.grant(roles["member"], user=demo_user, project=demo_project)
    service = admin.services.create("swift", type="object-store")
    for interface in ("public", "internal"):
        admin.endpoints.create(service, f"http://127.0.0.1:{proxy_port}/v1/AUTH_%(project_id)s",
                               interface=interface, region=REGION)
    user_session = session.Session(auth=v3.Password(
        auth_url=auth_url, username=USER, password=user_password, project_name=PROJECT,
        user_domain_name=DOMAIN, project_domain_name=DOMAIN))
    credential = client.Client(session=user_session).application_credentials.create(
        name="zodb-swiftblobs", user=user_session.get_user_id())
    return {"project_id": demo_project.id, "application_credential_id": credential.id,
            "application_credential_secret": credential.secret}


def proxy_filters(port: int, service_password: str) -> dict[str, str]:
    """The Swift proxy's ``authtoken`` and ``keystoneauth`` filter settings."""
    url = f"http://127.0.0.1:{port}/v3"
    return {
        "authtoken": (
            "paste.filter_factory = keystonemiddleware.auth_token:filter_factory\n"
            f"www_authenticate_uri = {url}\nauth_url = {url}\nauth_type = password\n"
            f"username = {SERVICE_USER}\npassword = {service_password}\n"
            f"project_name = {SERVICE_PROJECT}\nuser_domain_id = default\n"
            f"project_domain_id = default\nregion_name = {REGION}\ninterface = internal\n"
            "delay_auth_decision = true\nservice_token_roles_required = true\n"
        ),
        "keystoneauth": ("use = egg:swift#keystoneauth\noperator_roles = admin, member\n"
                         "reseller_admin_role = ResellerAdmin\n"),
    }


def serve(directory: str, port: int) -> None:
    """Serve Keystone's public API on 127.0.0.1:*port* (runs in its own process)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    os.environ["OS_KEYSTONE_CONFIG_DIR"] = directory
    sys.argv = sys.argv[:1]  # Keystone parses the command line with oslo.config
    from keystone.server.wsgi import initialize_public_application

    application = initialize_public_application()
    lock = threading.Lock()  # SQLite: concurrent logins would fail with "database is locked"

    def serialized(environ, start_response):
        with lock:
            return list(application(environ, start_response))

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    make_server("127.0.0.1", port, serialized, server_class=Server,
                handler_class=QuietHandler).serve_forever()
