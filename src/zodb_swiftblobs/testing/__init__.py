"""Development tooling: a real OpenStack Swift (and Keystone) on 127.0.0.1 for
development and tests, and a fault-injecting proxy middleware.

Not used by the storage at run time; the ``devswift`` and ``demo`` commands
and the test suite start it.
"""
