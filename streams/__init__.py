"""GStreamer video sources addressed by URI (files, still images, V4L2, Jetson CSI, RTSP, test).

``open_source(uri)`` returns a :class:`VideoSource` yielding :class:`Frame` objects (RGB numpy
images with timestamps); every failure is a :class:`SourceError` with one readable line.
"""

from streams.source import Frame, SourceTimeout, VideoSource, open_source
from streams.uri import KNOWN_SCHEMES, SourceError, SourceSpec, parse_uri

__all__ = [
    "KNOWN_SCHEMES",
    "Frame",
    "SourceError",
    "SourceSpec",
    "SourceTimeout",
    "VideoSource",
    "open_source",
    "parse_uri",
]
