"""The errors a video source reports: one clear, human line each.

Every problem with a source (a wrong URI, a missing file or camera, a file that is not a video, a
decoder failure, a stream that stops delivering) is a :class:`SourceError`. The CLI prints such an
error as ``emostream: error: <message>`` with a non-zero exit, so the messages are written for the
person who typed the URI, not for a GStreamer developer: no debug dumps, no element paths.
The subclasses exist so that callers can react differently where it matters (e.g. reconnect on a
timeout, give up on a missing file); catching :class:`SourceError` catches them all.
"""

from __future__ import annotations


class SourceError(Exception):
    """A video source could not be opened or read."""


class SourceNotFoundError(SourceError):
    """The file or camera device the URI names does not exist."""


class UnsupportedSourceError(SourceError):
    """The URI scheme is unknown, or this machine cannot provide that kind of source (e.g. CSI off-Jetson)."""


class SourceTimeoutError(SourceError):
    """No frame (nor end of stream, nor error) arrived within the allowed time."""


class ImageTooLargeError(SourceError):
    """An image or frame whose size exceeds the documented limits (a decompression-bomb guard)."""
