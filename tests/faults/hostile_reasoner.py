"""A hostile reasoner for fault tests: a real ROUTER process that answers keyframes with scripted replies.

Run as ``python -m tests.faults.hostile_reasoner ENDPOINT SCRIPT`` where SCRIPT is a msgpack file
holding a list with one entry per keyframe it will receive, in order:

* ``{"raw": bytes}`` -- send these bytes as the reply (garbage, a msgpack list, an oversized blob);
* ``{"set": {...}, "delete": [...]}`` -- the real reply (``reasoner.core.Reasoner`` on the
  keyframe, so every field is right) with these fields overwritten/removed; ``id`` is the
  keyframe's unless ``set`` gives one. ``{}`` is the unchanged, valid reply.

Keyframes beyond the script get a valid reply. It prints ``listening`` once bound, and stops on
SIGTERM. Why a separate process: the edge must survive a misbehaving reasoner across a real
socket, exactly as it would in the field, not a stubbed ``_deliver`` call.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import msgpack
import zmq

from emostream.reasoner.core import Reasoner
from emostream.reasoner.schema import pack, unpack, validate_keyframe


def main(endpoint: str, script_path: str) -> int:
    script = msgpack.unpackb(Path(script_path).read_bytes(), raw=False)
    reasoner = Reasoner()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("listening", flush=True)
    n = 0
    while not stop:
        if not sock.poll(100):
            continue
        ident, data = sock.recv_multipart()
        keyframe = validate_keyframe(unpack(data))
        entry = script[n] if n < len(script) else {}
        n += 1
        if "raw" in entry:
            sock.send_multipart([ident, entry["raw"]])
            continue
        reply = reasoner.process([keyframe])[0]
        for key in entry.get("delete", []):
            reply.pop(key, None)
        reply.update(entry.get("set", {}))
        sock.send_multipart([ident, pack(reply)])
    sock.close(linger=0)
    ctx.term()
    print(f"answered {n}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
