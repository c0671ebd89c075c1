"""The settings of the Plone integration: zope.conf's
``<product-config zodb-swiftblobs>`` section.

``serve-from-swift-above``  blobs larger than this (bytes, or 10MB, 2GB...)
                            are served by Swift; unset: Plone serves every blob
``serve-with``              ``tempurl`` (a 302 to a Swift TempURL, the default)
                            or ``x-accel-redirect`` (nginx fetches the TempURL)
``x-accel-location``        the nginx internal location that proxies to Swift
                            (``x-accel-redirect`` only), such as ``/swift/``
``tempurl-lifetime``        how long a TempURL is valid (default 1h; 90, 30m, 6h;
                            at most 7d: a TempURL cannot be taken back)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from ZConfig.datatypes import stock_datatypes

PRODUCT = "zodb-swiftblobs"
MODES = ("tempurl", "x-accel-redirect")
DEFAULT_LIFETIME = 3600
MAX_LIFETIME = 7 * 86400
DATATYPES = {"byte-size": "size (4096, 10MB, 2GB)",
             "time-interval": "duration in whole seconds, minutes, hours or days "
                              "(90, 30m, 6h, 7d)"}
KEYS = ("serve-from-swift-above", "serve-with", "x-accel-location", "tempurl-lifetime")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingSettings:
    """Which blobs Swift serves, and how."""

    above: int                    # bytes: larger blobs are served by Swift
    mode: str                     # one of MODES
    x_accel_location: str | None  # the nginx location prefix (x-accel-redirect)
    lifetime: int                 # seconds a TempURL is valid


def parse_settings(config: Mapping[str, str]) -> ServingSettings | None:
    """The settings a product-config mapping gives; None when Swift serves
    nothing (no ``serve-from-swift-above``).  ValueError when one is wrong."""
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise ValueError(f"<product-config {PRODUCT}>: unknown key(s) {', '.join(unknown)}; "
                         f"the keys are {', '.join(KEYS)}")
    if not config.get("serve-from-swift-above"):
        return None
    above = number(config, "serve-from-swift-above", "byte-size")
    if above < 0:
        raise ValueError(f"<product-config {PRODUCT}>: serve-from-swift-above must not be "
                         f"negative (0: Swift serves every blob that is not empty)")
    mode = config.get("serve-with", "tempurl")
    if mode not in MODES:
        raise ValueError(f"<product-config {PRODUCT}>: serve-with is one of "
                         f"{' or '.join(MODES)}, not {mode!r}")
    location = config.get("x-accel-location")
    if mode == "x-accel-redirect" and not (location and location.startswith("/")):
        raise ValueError(f"<product-config {PRODUCT}>: serve-with x-accel-redirect needs "
                         f"x-accel-location, the path of nginx's internal location (/swift/)")
    lifetime = number(config, "tempurl-lifetime", "time-interval", str(DEFAULT_LIFETIME))
    if lifetime <= 0:
        raise ValueError(f"<product-config {PRODUCT}>: tempurl-lifetime must be positive")
    if lifetime > MAX_LIFETIME:
        raise ValueError(f"<product-config {PRODUCT}>: tempurl-lifetime must be at most "
                         f"{MAX_LIFETIME // 86400} days "
                         f"(a TempURL cannot be taken back; each download gets a new one)")
    return ServingSettings(above, mode, location, lifetime)


def number(config: Mapping[str, str], key: str, datatype: str, default: str = "") -> int:
    """Setting *key* read as ZConfig reads its *datatype* (``byte-size`` or
    ``time-interval``); ValueError naming it."""
    value = config.get(key, default)
    try:
        return int(stock_datatypes[datatype](value))
    except ValueError:
        raise ValueError(f"<product-config {PRODUCT}>: {key} is a {DATATYPES[datatype]}, "
                         f"not {value!r}") from None


@functools.cache
def serving_settings() -> ServingSettings | None:
    """The settings of this Zope process (read once from its zope.conf)."""
    from App.config import getConfiguration

    product_config = getattr(getConfiguration(), "product_config", None) or {}
    return parse_settings(product_config.get(PRODUCT, {}))


def check_settings(event: object) -> None:
    """Read the settings as Zope starts: a mistake stops it, and the log says
    which blobs Swift serves."""
    settings = serving_settings()
    if settings is None:
        logger.info("zodb-swiftblobs: Plone serves every blob "
                    "(no serve-from-swift-above in <product-config %s>)", PRODUCT)
    else:
        logger.info("zodb-swiftblobs: blobs above %d bytes are served by Swift (%s)",
                    settings.above, settings.mode)
