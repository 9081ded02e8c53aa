"""Measured the design that became ``--front process`` (:mod:`edge.front_process`): each stream's front half in
its own process, stripped to the bone (no scheduler, no batching), to see what the split can gain at most.

Why: per-thread CPU showed that one process with a front thread and a main thread is held by the GIL, not by
the cores (README, "What limits four streams"). This probe spawns one process per stream that decodes, detects
(interval 5, flow), aligns and sends faces and 48x48 crops back over a pipe -- optionally the frame's I420 planes
too, which keyframes, overlays and the console need (pickled through the pipe, or through shared memory); the
parent runs the engine, tracker, smoothing and JSON records. It prints aggregate frames/s per round; compare
with ``multistream_bench.py`` in the same minutes.

    .venv/bin/python benchmarks/front_process_probe.py [--streams 1 4] [--planes none|pipe|shm] [--rounds 2]
        [--clip PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def default_clip() -> Path:
    data = Path(os.environ.get("EMOSTREAM_DATA", REPO.parent / "shared" / "data"))
    return data / "video" / "WolfgangLanger_Pexels.mp4"


SLOTS = 4


def front(conn: Connection, clip: str, stream: str, planes: str) -> None:
    """The child: decode, detect every 5th frame and carry by flow, align; one message per frame."""
    from multiprocessing import shared_memory

    import numpy as np

    from emostream.edge.faces import FaceDetector
    from emostream.edge.interval import IntervalDetector
    from emostream.edge.pipeline import gray_crops
    from emostream.streams import open_source

    interval = IntervalDetector(FaceDetector("full"), 5, "flow")
    conn.recv()  # start together, after every child has loaded its models
    shm, free = None, list(range(SLOTS))
    with open_source(clip, stream=stream) as src:
        for f in src:
            faces = interval.detect_frame(f)
            crops = gray_crops(f, faces, 48)
            pixels = None
            if planes == "pipe":
                pixels = (f.i420, f.width, f.height)
            elif planes == "shm":
                data = f.i420
                if shm is None:
                    shm = shared_memory.SharedMemory(create=True, size=data.nbytes * SLOTS)
                    conn.send(("shm", shm.name, data.nbytes))
                while not free or conn.poll():
                    free.append(conn.recv())
                slot = free.pop()
                np.ndarray(data.shape, data.dtype, shm.buf, slot * data.nbytes)[...] = data
                pixels = (slot, data.shape, f.width, f.height)
            conn.send((f.index, f.pts_ns, faces.boxes, faces.scores, faces.keypoints, crops, pixels))
    conn.send(None)
    if shm is not None:
        conn.recv()  # the parent has copied the last frame out
        shm.close()
        shm.unlink()


def run(clip: str, n: int, planes: str) -> float:
    from multiprocessing import shared_memory

    import numpy as np

    from emostream.edge.face_batch import FaceBatch, frame_record
    from emostream.edge.faces import Faces
    from emostream.edge.track import StreamProcessor
    from emostream.engines.emotion import DEFAULT_MODEL, load_engine
    from emostream.engines.emotion.valence_arousal import valence_arousal
    from emostream.streams import Frame

    engine = load_engine("onnxruntime", DEFAULT_MODEL, threads=1)
    labels = tuple(engine.labels)
    ctx = mp.get_context("spawn")  # GStreamer and ONNX Runtime threads do not survive a fork
    procs, streams = [], {}
    for k in range(n):
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=front, args=(child_end, clip, f"s{k}", planes), daemon=True)
        p.start()
        procs.append(p)
        streams[parent_end] = StreamProcessor(f"s{k}", labels, 24.0)
    time.sleep(3.0)  # start-up (imports, models) is not throughput
    for conn in streams:
        conn.send("go")
    blank = np.zeros((4, 4, 3), np.uint8)
    start, frames, live, shms = time.perf_counter(), 0, set(streams), {}
    while live:
        for conn in wait(list(live)):
            msg = conn.recv()
            if msg is None:
                live.discard(conn)
                if conn in shms:
                    shms[conn].close()
                    conn.send("done")
                continue
            if msg[0] == "shm":
                shms[conn] = shared_memory.SharedMemory(name=msg[1])
                continue
            index, pts, boxes, scores, kps, crops, pixels = msg
            if pixels and planes == "shm":
                slot, shape, w, h = pixels
                nbytes = int(np.prod(shape))
                i420 = np.ndarray(shape, np.uint8, shms[conn].buf, slot * nbytes).copy()
                conn.send(slot)
                frame = Frame.from_i420(i420, w, h, index, pts, "s")
            else:
                frame = Frame.from_i420(pixels[0], pixels[1], pixels[2], index, pts, "s") if pixels else Frame(
                    blank, index, pts, "s")
            probs = engine.run(crops) if len(crops) else np.zeros((0, len(labels)), np.float32)
            va = valence_arousal(probs, labels) if len(probs) else np.zeros((0, 2), np.float32)
            step = streams[conn].process(FaceBatch.from_faces(Faces(boxes, scores, kps), crops, probs, labels, va,
                                                              frame))
            json.dumps(frame_record(step.batch))
            frames += 1
    fps = frames / (time.perf_counter() - start)
    for p in procs:
        p.join()
    engine.close()
    return fps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--planes", choices=("none", "pipe", "shm"), default="none",
                    help="also send every frame's I420 planes to the parent: pickled through the pipe, or through "
                         "a ring of shared-memory slots the parent copies out of")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clip", default=str(default_clip()))
    args = ap.parse_args()
    if not Path(args.clip).is_file():
        print(f"front_process_probe: clip not found: {args.clip} (set EMOSTREAM_DATA)", file=sys.stderr)
        return 2
    for rnd in range(args.rounds):
        for n in args.streams:
            print(f"round {rnd + 1}: {n} stream(s), planes: {args.planes}: "
                  f"{run(args.clip, n, args.planes):.0f} frames/s in aggregate", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
