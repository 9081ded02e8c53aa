"""The operator's console (``emostream run --console HOST:PORT``): a live web page for every stream.

:mod:`.store` is the sink on the loop thread (it only keeps references and small numbers);
:mod:`.server` serves the page, a live channel (server-sent events) and JPEG frames from its own
thread at its own pace; ``static/`` holds the page (plain HTML/JS/CSS, no build step, no CDN).
"""

from emostream.edge.console.server import ConsoleError, ConsoleServer, parse_console_addr
from emostream.edge.console.store import SnapshotStore

__all__ = ["ConsoleError", "ConsoleServer", "SnapshotStore", "parse_console_addr"]
