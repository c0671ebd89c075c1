"""plone.namedfile's views, answering for big blobs with a redirect to Swift.

Each is reached only once Zope's security has let the user in, and reads
the file as plone.namedfile does (with its permission checks), before
anything is redirected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plone.namedfile.browser import DisplayFile, Download
from plone.namedfile.scaling import ImageScale, ImageScaling
from plone.namedfile.utils import stream_data
from plone.transformchain.interfaces import DISABLE_TRANSFORM_REQUEST_KEY

from .redirect import blob_redirect
from .settings import serving_settings


def serve(file: Any, request: Any, set_headers: Callable[[], None],
          plone_serves: Callable[[], Any]) -> Any:
    """Plone's headers for *file*, then its redirect to Swift when it has
    one, else what *plone_serves* returns.

    A redirect's headers are final: no transform (plone.app.caching's rules
    would let a shared cache keep it a day, past its TempURL's lifetime)."""
    settings = serving_settings()
    redirect = blob_redirect(file, settings)  # first: it gives the headers the size
    set_headers()
    if redirect is None:
        return plone_serves()
    request.environ[DISABLE_TRANSFORM_REQUEST_KEY] = True
    return redirect.answer(request.response, settings)


class SwiftDownload(Download):
    """``@@download``: a big blob is served by Swift."""

    def __call__(self) -> Any:
        file = self._getFile()
        return serve(file, self.request, lambda: self.set_headers(file),
                     lambda: stream_data(file, **self.handle_request_range(file)))


class SwiftDisplayFile(DisplayFile):
    """``@@display-file``: a big blob is served by Swift (inline when Plone
    would show it inline)."""

    __call__ = SwiftDownload.__call__


class SwiftImageScale(ImageScale):
    """An image scale, or the original image, whose big blob Swift serves."""

    def index_html(self) -> Any:
        """The image, or the redirect to it."""
        self.validate_access()
        return serve(self.data, self.request, self.set_headers,
                     lambda: stream_data(self.data))

    def HEAD(self, REQUEST: Any, RESPONSE: Any = None) -> str:
        """The image's headers, or the redirect to it (without reading it)."""
        self.validate_access()
        return serve(self.data, REQUEST, lambda: self.set_headers(response=REQUEST.response),
                     lambda: "")

    HEAD.__roles__ = ("Anonymous",)  # validate_access checks the field's permission


class SwiftImageScaling(ImageScaling):
    """``@@images``, whose scales are :class:`SwiftImageScale`."""

    _scale_view_class = SwiftImageScale
