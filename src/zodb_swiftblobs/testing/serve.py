"""What the embedded Swift's processes run: ``python -m zodb_swiftblobs.testing.serve``
with ``rings ETC ACCOUNT_PORT CONTAINER_PORT OBJECT_PORT POLICIES``, ``serve APP
CONF ETC`` or ``serve-keystone DIRECTORY PORT``.

Only these processes import Swift (it needs eventlet); the client side never does.
``serve`` points Swift at the cluster's private configuration directory before
the server loads.
"""

from __future__ import annotations

import os
import sys

from . import devkeystone

SWIFT_MISSING = 3  # the exit status of rings and serve when Swift cannot be imported


def _build_rings(etc: str, account: str, container: str, obj: str, policies: str) -> None:
    from swift.common.ring import RingBuilder

    ring_files = [("account.ring.gz", int(account)), ("container.ring.gz", int(container))]
    ring_files += [("object.ring.gz" if index == 0 else f"object-{index}.ring.gz", int(obj))
                   for index in range(int(policies))]
    for filename, port in ring_files:
        builder = RingBuilder(4, 1, 1)
        builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": port,
                         "device": "d1", "weight": 100.0, "meta": ""})
        builder.rebalance()
        builder.get_ring().save(os.path.join(etc, filename))


def _serve(app: str, conf: str, etc: str) -> int:
    from swift.common import constraints, utils

    utils.set_swift_dir(etc)
    constraints.reload_constraints()
    from swift.common.wsgi import run_wsgi

    return run_wsgi(conf, f"{app}-server", verbose=True) or 0


def _main(argv: list[str]) -> int:
    command, *args = argv
    try:
        if command == "rings":
            _build_rings(*args)
            return 0
        if command == "serve":
            return _serve(*args)
    except ImportError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return SWIFT_MISSING
    if command == "serve-keystone":
        devkeystone.serve(args[0], int(args[1]))
        return 0
    raise SystemExit(f"unknown devswift helper command {command!r}")


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
