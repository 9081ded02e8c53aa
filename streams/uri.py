"""Source URIs (the jetson-utils ``videoSource`` convention) parsed into a small, checked description.

Parsing is kept apart from GStreamer so that a typo in a URI is reported before any pipeline exists,
and so that the mapping URI -> pipeline can be tested without media.

Accepted forms:

* ``path/to/clip.mp4``, ``/abs/clip.mov``, ``file:///abs/clip.mp4``, ``file://relative/clip.mp4`` -- a
  file; still images (``.jpg .jpeg .png .bmp``) are delivered as a single frame, larger than 4096 px on a
  side fitted to 4096 px and past the pixel limits refused (:mod:`streams.still`).
* ``/dev/videoN``, ``v4l2:///dev/videoN`` -- a V4L2 camera.
* ``csi://N`` -- a Jetson MIPI CSI camera (``nvarguscamerasrc sensor-id=N``).
* ``rtsp://host[:port]/path`` (also ``rtsps://``, ``rtspt://``) -- an RTSP stream.
* ``test://`` -- GStreamer's ``videotestsrc``, live. Optional query parameters:
  ``pattern`` (e.g. ``ball``, ``smpte``, ``snow``; default ``smpte``), ``num-buffers`` (end after N frames;
  default endless), ``width``/``height`` (default 640x480), ``fps`` (default 30), ``live`` (``0`` for a
  non-live source that runs as fast as the consumer reads). Example: ``test://?pattern=ball&num-buffers=60``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from emostream.streams.errors import SourceError, SourceNotFoundError, UnsupportedSourceError

KNOWN_SCHEMES = ("file", "v4l2", "csi", "rtsp", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
TEST_PARAMS = ("pattern", "num-buffers", "width", "height", "fps", "live")


@dataclass(frozen=True)
class SourceSpec:
    """What a URI names: the kind of source and the few facts needed to build its pipeline."""

    kind: str  # one of KNOWN_SCHEMES
    uri: str
    path: Path | None = None  # file
    device: str | None = None  # v4l2
    sensor_id: int | None = None  # csi
    location: str | None = None  # rtsp
    params: dict[str, str] = field(default_factory=dict)  # test

    @property
    def is_live(self) -> bool:
        """Cameras, network streams and the live test source produce frames whether or not anyone reads."""
        if self.kind == "file":
            return False
        if self.kind == "test":
            return self.params.get("live", "1") not in ("0", "false", "no")
        return True

    @property
    def is_image(self) -> bool:
        return self.kind == "file" and self.path is not None and self.path.suffix.lower() in IMAGE_SUFFIXES


def _file_spec(uri: str, raw_path: str) -> SourceSpec:
    path = Path(raw_path).expanduser()
    if not path.exists():
        raise SourceNotFoundError(f"no such file: {raw_path}")
    if path.is_dir():
        raise SourceError(f"is a directory, not a video or image file: {raw_path}")
    return SourceSpec(kind="file", uri=uri, path=path.resolve())


def _int_param(params: dict[str, str], key: str, uri: str, minimum: int = 1) -> None:
    value = params.get(key)
    if value is None:
        return
    if not value.isdigit() or int(value) < minimum:
        raise SourceError(f"bad value {key}={value!r} in {uri} (expected an integer >= {minimum})")


def parse_uri(uri: str) -> SourceSpec:
    """Classify ``uri``; raise SourceError for unknown schemes, missing files and malformed parameters."""
    if not isinstance(uri, str) or not uri.strip():
        raise SourceError("empty source URI (give a file path, /dev/videoN, csi://N, rtsp://... or test://)")
    uri = uri.strip()
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", uri)
    if match is None:
        if re.fullmatch(r"/dev/video\d+", uri):
            return _v4l2_spec(uri, uri)
        return _file_spec(uri, uri)

    scheme = match.group(1).lower()
    parts = urlsplit(uri)
    if scheme == "file":
        host = parts.netloc if parts.netloc not in ("", "localhost") else ""
        return _file_spec(uri, unquote(host + parts.path))
    if scheme == "v4l2":
        return _v4l2_spec(uri, unquote(parts.netloc + parts.path))
    if scheme == "csi":
        sensor = parts.netloc + parts.path.strip("/")
        if not sensor.isdigit():
            raise SourceError(f"bad CSI camera URI {uri!r} (expected csi://N with N the sensor id, e.g. csi://0)")
        return SourceSpec(kind="csi", uri=uri, sensor_id=int(sensor))
    if scheme in ("rtsp", "rtsps", "rtspt"):
        if not parts.hostname:
            raise SourceError(f"bad RTSP URI {uri!r} (expected rtsp://host[:port]/path)")
        return SourceSpec(kind="rtsp", uri=uri, location=uri)
    if scheme == "test":
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(params) - set(TEST_PARAMS))
        if unknown:
            known = ", ".join(TEST_PARAMS)
            raise SourceError(f"unknown test:// parameter(s) {', '.join(unknown)} (known: {known})")
        for key in ("num-buffers", "width", "height"):
            _int_param(params, key, uri)
        if "fps" in params:
            try:
                if float(params["fps"]) <= 0:
                    raise ValueError
            except ValueError:
                bad = params["fps"]
                raise SourceError(f"bad value fps={bad!r} in {uri} (expected a number > 0)") from None
        if "pattern" in params and not re.fullmatch(r"[A-Za-z0-9_-]+", params["pattern"]):
            raise SourceError(f"bad value pattern={params['pattern']!r} in {uri}")
        return SourceSpec(kind="test", uri=uri, params=params)
    raise UnsupportedSourceError(f"unknown source scheme '{scheme}://' (known: {', '.join(KNOWN_SCHEMES)})")


def _v4l2_spec(uri: str, device: str) -> SourceSpec:
    if not re.fullmatch(r"/dev/video\d+", device):
        raise SourceError(f"bad V4L2 URI {uri!r} (expected /dev/videoN or v4l2:///dev/videoN)")
    if not Path(device).exists():
        raise SourceNotFoundError(f"no such camera device: {device} (is the camera connected?)")
    return SourceSpec(kind="v4l2", uri=uri, device=device)
