"""python-swiftclient's log: no secrets (no URL's password either), and no lines
for the requests answered 404."""

from __future__ import annotations

import logging
import threading

from swiftclient import client as swift

from .auth import hide_url_passwords


class QuietMisses(logging.Filter):
    """Keeps python-swiftclient from logging the requests answered 404.

    swiftclient logs each failed request at INFO: a curl command line, then
    the response's status, headers and body, as separate records.  To this
    package a 404 is an answer (a container not created yet, an object not
    written yet), raised as NotFoundError for the caller to judge, so those
    records would only fill an application's log.  The command line is held
    until the status says whether it is a 404; other failures are logged as
    before.  The command line of every request shows no URL's password.
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        local = self._local
        message = str(record.msg)
        if message.startswith("REQ: ") and record.args:  # its curl command line
            record.args = tuple(hide_url_passwords(str(arg)) for arg in record.args)
        if record.levelno != logging.INFO or getattr(local, "releasing", False):
            return True
        if message.startswith("REQ: "):
            local.request, local.quiet = record, False
            return False
        if message.startswith("RESP STATUS: "):
            request, local.request = getattr(local, "request", None), None
            local.quiet = bool(record.args) and record.args[0] == 404
            if request is not None and not local.quiet:
                local.releasing = True
                try:
                    logging.getLogger(request.name).handle(request)
                finally:
                    local.releasing = False
        return not (message.startswith("RESP ") and getattr(local, "quiet", False))


def configure_swiftclient_log() -> None:
    """Keep tokens out of swiftclient's debug log (it shows their first 16
    characters by default) and its 404 lines out of every log."""
    swift.logger_settings["reveal_sensitive_prefix"] = 0
    logger = logging.getLogger("swiftclient")
    if not any(isinstance(f, QuietMisses) for f in logger.filters):
        logger.addFilter(QuietMisses())
