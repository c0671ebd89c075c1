"""The configuration files of the embedded Swift: swift.conf and one per server."""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import devkeystone

ACCOUNT = "test"
USER = "tester"
POLICIES = ("gold", "silver")
STORAGE_SERVERS = ("account", "container", "object")


@dataclass(frozen=True)
class SwiftConfig:
    """Writes a cluster's configuration into *etc*, for the ports and secrets
    of a state (see :class:`zodb_swiftblobs.testing.devswift.DevSwift`).

    *faults_path*, when given, puts :mod:`zodb_swiftblobs.testing.devfaults`
    in the proxy, reading its rules from that file.  The middleware named in
    *without_middleware* (such as ``slo``) is left out of the proxy.  The
    TempAuth proxy serves Swift's S3 API too (s3api: the access key is
    ``account:user``, the secret the user's key)."""

    directory: str
    devices: str
    max_file_size: int | None = None
    max_deletes_per_request: int | None = None
    expose_info: bool = True
    rate_limit: float | None = None
    faults_path: str | None = None
    without_middleware: tuple[str, ...] = ()

    @property
    def etc(self) -> str:
        return os.path.join(self.directory, "etc")

    def write(self, state: dict) -> None:
        """Write swift.conf and every server's configuration."""
        self._write_swift_conf(state)
        for name in STORAGE_SERVERS:
            self._write_storage_server_conf(state, name)
        self._write_proxy_conf(state, "proxy")
        if state.get("keystone"):
            self._write_proxy_conf(state, "proxy-keystone")

    def _write(self, name: str, text: str) -> None:
        path = os.path.join(self.etc, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)

    def _write_swift_conf(self, state: dict) -> None:
        policies = "".join(
            f"[storage-policy:{index}]\nname = {name}\n"
            + ("default = yes\n" if index == 0 else "")
            for index, name in enumerate(POLICIES)
        )
        max_size = f"max_file_size = {self.max_file_size}\n" if self.max_file_size else ""
        self._write("swift.conf", (
            f"[swift-hash]\nswift_hash_path_suffix = {state['hash_suffix']}\n"
            f"{policies}[swift-constraints]\n{max_size}"
        ))

    def _common(self, state: dict, name: str) -> str:
        return (
            "[DEFAULT]\n"
            "bind_ip = 127.0.0.1\n"
            f"bind_port = {state['ports'][name]}\n"
            "workers = 0\n"
            f"user = {_current_user()}\n"
            f"swift_dir = {self.etc}\n"
            f"devices = {self.devices}\n"
            "mount_check = false\n"
            "disable_fallocate = true\n"
            f"recon_cache_path = {os.path.join(self.directory, 'recon')}\n"
            f"log_name = {name}-server\n"
            "log_level = INFO\n"
        )

    def _write_storage_server_conf(self, state: dict, name: str) -> None:
        self._write(f"{name}-server.conf", (
            self._common(state, name)
            + "\n[pipeline:main]\n"
            f"pipeline = healthcheck {name}-server\n"
            "\n[filter:healthcheck]\nuse = egg:swift#healthcheck\n"
            f"\n[app:{name}-server]\nuse = egg:swift#{name}\n"
            + ("\n[object-updater]\n" if name == "object" else "")
        ))

    def _write_proxy_conf(self, state: dict, name: str) -> None:
        memcached = state["ports"].get("memcached")
        pipeline = (
            "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk "
            "tempurl ratelimit s3api tempauth copy container-quotas account-quotas slo dlo "
            "versioned_writes proxy-logging proxy-server"
        )
        if self.faults_path:
            pipeline = pipeline.replace(" proxy-server", " faults proxy-server")
        if not memcached:
            pipeline = pipeline.replace(" cache ", " ")
        filters = {
            "catch_errors": "", "gatekeeper": "", "healthcheck": "",
            "proxy-logging": "", "listing_formats": "", "tempurl": "",
            "ratelimit": (f"account_ratelimit = {self.rate_limit}\n"
                          "max_sleep_time_seconds = 0.1\nrate_buffer_seconds = 0\n"
                          if self.rate_limit else ""),
            "s3api": "", "copy": "", "container-quotas": "", "account-quotas": "",
            "slo": "", "dlo": "", "versioned_writes": "",
            "bulk": "delete_concurrency = 8\n" + (
                f"max_deletes_per_request = {self.max_deletes_per_request}\n"
                if self.max_deletes_per_request else ""),
            "tempauth": (
                f"user_{ACCOUNT}_{USER} = {state['key']} .admin\n"
                f"fernet_key_1 = {state['fernet_key']}\n"
                "active_fernet_key_id = 1\n"
                f"token_life = {state['token_life']}\n"
            ),
        }
        if self.faults_path:
            filters["faults"] = ("paste.filter_factory = zodb_swiftblobs.testing.devfaults:"
                                 f"filter_factory\nrules_path = {self.faults_path}\n")
        if memcached:
            filters["cache"] = f"memcache_servers = 127.0.0.1:{memcached}\n"
        if name == "proxy-keystone":
            pipeline = pipeline.replace(" s3api tempauth ", " authtoken keystoneauth ")
            del filters["s3api"], filters["tempauth"]
            filters.update(devkeystone.proxy_filters(state["ports"]["keystone"],
                                                     state["keystone"]["service_password"]))
        pipeline = " ".join(item for item in pipeline.split()
                            if item not in self.without_middleware)
        filters = {item: extra for item, extra in filters.items()
                   if item not in self.without_middleware}
        egg = {"cache": "memcache", "proxy-logging": "proxy_logging",
               "container-quotas": "container_quotas", "account-quotas": "account_quotas"}
        sections = "".join(
            f"\n[filter:{filter_name}]\n"
            + ("" if "paste.filter_factory" in extra or extra.startswith("use =")
               else f"use = egg:swift#{egg.get(filter_name, filter_name)}\n")
            + extra
            for filter_name, extra in filters.items()
        )
        self._write(f"{name}-server.conf", (
            self._common(state, name)
            + f"\n[pipeline:main]\npipeline = {pipeline}\n"
            "\n[app:proxy-server]\nuse = egg:swift#proxy\n"
            "account_autocreate = true\nallow_account_management = true\n"
            f"expose_info = {'true' if self.expose_info else 'false'}\n"
            # One replica: do not shun a restarted server for the default 60 s.
            "error_suppression_interval = 2\n"
            + sections
        ))


def _current_user() -> str:
    import pwd
    return pwd.getpwuid(os.geteuid()).pw_name
