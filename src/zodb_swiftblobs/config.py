"""ZConfig support: the ``<swiftblobstorage>`` section of zope.conf and ZODB
configuration files (``%import zodb_swiftblobs``; see component.xml)."""

from __future__ import annotations

import inspect

import ZODB.config

from .storage import SwiftBlobStorage

OPTIONS = [name for name, parameter in
           inspect.signature(SwiftBlobStorage.__init__).parameters.items()
           if name not in ("self", "base") and not name.startswith("_")]


class SwiftBlobStorageFactory(ZODB.config.BaseConfig):
    """Opens the contained storage and wraps it in a SwiftBlobStorage."""

    def open(self) -> SwiftBlobStorage:
        base = self.config.base.open()
        try:
            return SwiftBlobStorage(base, **{name: getattr(self.config, name)
                                             for name in OPTIONS})
        except BaseException:
            base.close()
            raise
