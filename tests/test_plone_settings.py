"""The settings of the Plone integration (<product-config zodb-swiftblobs>)."""

import pytest

from zodb_swiftblobs.plone.settings import DEFAULT_LIFETIME, ServingSettings, parse_settings


def test_nothing_is_served_by_swift_unless_a_size_is_configured():
    assert parse_settings({}) is None
    assert parse_settings({"serve-with": "tempurl"}) is None


def test_sizes_and_durations_read_as_in_zope_conf():
    assert parse_settings({"serve-from-swift-above": "10MB"}) == ServingSettings(
        10 << 20, "tempurl", None, DEFAULT_LIFETIME)
    assert parse_settings({"serve-from-swift-above": "4096", "tempurl-lifetime": "30m",
                           "serve-with": "x-accel-redirect",
                           "x-accel-location": "/swift/"}) == ServingSettings(
        4096, "x-accel-redirect", "/swift/", 1800)
    assert parse_settings({"serve-from-swift-above": "1MB", "tempurl-lifetime": "7d"}).lifetime \
        == 7 * 86400
    assert parse_settings({"serve-from-swift-above": "0"}).above == 0  # every blob


@pytest.mark.parametrize("config, message", [
    ({"serve-from-swift-above": "1MB", "serve-with": "sendfile"},
     "serve-with is one of tempurl or x-accel-redirect, not 'sendfile'"),
    ({"serve-from-swift-above": "1MB", "serve-with": "x-accel-redirect"},
     "needs x-accel-location"),
    ({"serve-from-swift-above": "1MB", "serve-with": "x-accel-redirect",
      "x-accel-location": "swift"}, "needs x-accel-location"),
    ({"serve-from-swift-above": "1MB", "tempurl-lifetime": "0"}, "must be positive"),
    # Swift answers 500 to a TempURL expiring in 10**20 seconds
    ({"serve-from-swift-above": "1MB", "tempurl-lifetime": "99999999999999999999"},
     "tempurl-lifetime must be at most 7 days"),
    ({"serve-from-swift-above": "1MB", "tempurl-lifetime": "8d"}, "at most 7 days"),
    ({"serve-from-swift-above": "ten"}, "serve-from-swift-above is a size .*, not 'ten'"),
    ({"serve-from-swift-above": "1.5MB"}, "serve-from-swift-above is a size"),
    ({"serve-from-swift-above": "-1"}, "serve-from-swift-above must not be negative"),
    ({"serve-from-swift-above": "1MB", "tempurl-lifetime": "1.5h"},
     "tempurl-lifetime is a duration .*, not '1.5h'"),
    ({"serve-from-swift-abve": "1MB"}, "unknown key"),
])
def test_mistakes_are_named(config, message):
    with pytest.raises(ValueError, match=message):
        parse_settings(config)
