"""Plone integration: plone.namedfile's downloads and image scales of big blobs
served by Swift (a redirect to a TempURL, or an ``X-Accel-Redirect`` for nginx).

Installed with the ``plone`` extra and loaded by ``plone.autoinclude``; only
this subpackage imports Plone.  Configured in zope.conf (see :mod:`.settings`).
"""
