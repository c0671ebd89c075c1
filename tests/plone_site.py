"""A real Plone site on the embedded Swift, served over HTTP by Zope's
``runwsgi`` (waitress) in a child process: its instance files, the script
that builds the site, and the server."""

import contextlib
import os
import socket
import subprocess
import sys

from conftest import child_environment, swift_config, wait_for

ADMIN = ("admin", "secret")

SITE_ZCML = """<configure xmlns="http://namespaces.zope.org/zope"
    xmlns:five="http://namespaces.zope.org/five">
  <include package="Zope2.App" />
  <five:loadProducts file="meta.zcml" />
  <five:loadProducts />
  <five:loadProductsOverrides />
  <securityPolicy component="AccessControl.security.SecurityPolicy" />
</configure>
"""

ZOPE_INI = """[app:main]
use = egg:Zope#main
zope_conf = {home}/zope.conf

[server:main]
use = egg:waitress#main
listen = 127.0.0.1:{port}
threads = 2

[loggers]
keys = root

[handlers]
keys = eventlog

[formatters]
keys = generic

[logger_root]
level = INFO
handlers = eventlog

[handler_eventlog]
class = FileHandler
args = (r'{home}/event.log', 'a')
level = INFO
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)s [%(name)s] %(message)s
"""

# Run by zconsole (``app`` is Zope's root): a Plone site with a big and a
# small file at its root (visible to anyone), a big file in a private folder
# and two big images, from the files in $PLONE_TEST_FILES.
BUILD_SITE = """
import os
import transaction
from Products.CMFPlone.factory import addPloneSite
from plone.namedfile.file import NamedBlobFile, NamedBlobImage
from zope.component.hooks import setSite

def read(name):
    with open(os.path.join(os.environ["PLONE_TEST_FILES"], name), "rb") as f:
        return f.read()

app.acl_users._doAddUser("admin", "secret", ["Manager"], [])
site = addPloneSite(app, "Plone", extension_ids=["plone.app.contenttypes:default"],
                    setup_content=False)
setSite(site)
site.invokeFactory("File", "big", file=NamedBlobFile(read("big"), filename="big video.mp4"))
site.invokeFactory("File", "small", file=NamedBlobFile(read("small"), filename="notes.txt"))
site.invokeFactory("Image", "picture", image=NamedBlobImage(read("picture.png"),
                                                           filename="picture.png"))
site.invokeFactory("Image", "poster", image=NamedBlobImage(read("poster.png"),
                                                          filename="poster.png"))
site.invokeFactory("Folder", "private")
site.private.invokeFactory("File", "secret", file=NamedBlobFile(read("big"),
                                                              filename="secret.bin"))
transaction.commit()
"""


def write_instance(home, cluster, container, serving, cache):
    """The files of a Zope instance in directory *home* whose main database
    is a FileStorage wrapped in a <swiftblobstorage> in *container* of
    *cluster* (its blob cache in directory *cache*), with *serving* as its
    <product-config zodb-swiftblobs>."""
    for name in ("etc", "var"):
        os.makedirs(home / name, exist_ok=True)
    (home / "etc" / "site.zcml").write_text(SITE_ZCML)
    database = swift_config(
        cluster, container, cache,
        f"<filestorage>\n      path {home / 'var' / 'Data.fs'}\n    </filestorage>",
        extra="large-object-threshold 2MB\n    segment-size 1MB")
    database = database.replace("<zodb main>", "<zodb_db main>\n  mount-point /").replace(
        "</zodb>", "</zodb_db>")
    settings = "\n".join(f"  {key} {value}" for key, value in serving.items())
    (home / "zope.conf").write_text(f"""{database}
%define INSTANCE {home}
instancehome $INSTANCE
clienthome $INSTANCE/var
debug-mode off
security-policy-implementation C
<product-config zodb-swiftblobs>
{settings}
</product-config>
""")
    return home / "zope.conf"


def build_site(home, files):
    """Run the script that builds the site, with its files in *files*."""
    script = home / "build_site.py"
    script.write_text(BUILD_SITE)
    subprocess.run([sys.executable, "-m", "Zope2.utilities.zconsole", "run",
                    str(home / "zope.conf"), str(script)], check=True, timeout=600,
                   env={**child_environment(), "PLONE_TEST_FILES": str(files)})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def listening(what, command, log_path, port, **options):
    """Run *command* (its output in the file *log_path*) until the end of the
    block, from the moment it listens on *port*; yields its base URL."""
    with open(log_path, "ab") as log:
        server = subprocess.Popen(command, stdout=log, stderr=log, **options)
    try:
        def ready():
            if server.poll() is not None:
                raise AssertionError(f"{what} stopped: {log_path.read_text()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_for(ready, f"{what} to listen", timeout=300)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def served(home):
    """Serve the instance in *home* over HTTP (a context manager yielding its
    base URL)."""
    port = free_port()
    (home / "zope.ini").write_text(ZOPE_INI.format(home=home, port=port))
    return listening("Zope", [sys.executable, "-m", "Zope2.Startup.serve",
                              str(home / "zope.ini")], home / "server.log", port,
                     env=child_environment())

NGINX_CONF = """daemon off;
user root;
pid {home}/nginx.pid;
error_log {home}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log {home}/nginx-access.log;
    client_body_temp_path {home}/nginx-body;
    proxy_temp_path {home}/nginx-proxy;
    fastcgi_temp_path {home}/nginx-fastcgi;
    uwsgi_temp_path {home}/nginx-uwsgi;
    scgi_temp_path {home}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {zope};
            proxy_set_header Host $http_host;
        }}
{swift_location}
    }}
}}
"""

# The README's location, Swift's address filled in.
SWIFT_LOCATION = """        location /swift-blobs/ {{
            internal;
            proxy_pass {swift}/;
            proxy_buffering off;
            proxy_hide_header Content-Type;
            proxy_hide_header Content-Disposition;
        }}"""


def behind_nginx(home, zope, swift):
    """nginx in front of the Zope at URL *zope*, sending its X-Accel-Redirects
    to the Swift at URL *swift* (a context manager yielding its base URL)."""
    port = free_port()
    (home / "nginx.conf").write_text(NGINX_CONF.format(
        home=home, port=port, zope=zope,
        swift_location=SWIFT_LOCATION.format(swift=swift)))
    return listening("nginx", ["nginx", "-c", str(home / "nginx.conf"), "-p", str(home)],
                     home / "nginx.log", port)
