"""GStreamer video sources addressed by URI (files, still images, V4L2, Jetson CSI, RTSP, test).

``open_source(uri)`` returns a :class:`VideoSource` yielding :class:`Frame` objects (pixels with
timestamps: ``frame.image`` RGB, ``frame.gray`` luma, each made on first use from what the decoder gave);
every failure is a :class:`SourceError` with one readable line.
"""

from emostream.streams.errors import SourceError, SourceNotFoundError, SourceTimeoutError, UnsupportedSourceError
from emostream.streams.frame import Colour, Frame
from emostream.streams.source import VideoSource, open_source
from emostream.streams.uri import KNOWN_SCHEMES, SourceSpec, parse_uri

__all__ = [
    "KNOWN_SCHEMES",
    "Colour",
    "Frame",
    "SourceError",
    "SourceNotFoundError",
    "SourceSpec",
    "SourceTimeoutError",
    "UnsupportedSourceError",
    "VideoSource",
    "open_source",
    "parse_uri",
]
