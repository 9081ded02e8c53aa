"""``emostream eval DIR``: accuracy of the emotion network on a labelled image folder."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

from emostream.datasets import DatasetError, load_labelled_images
from emostream.edge.output import Progress
from emostream.edge.scoring import score
from emostream.edge.timing import StageTimer
from emostream.errors import positive_int
from emostream.streams.errors import SourceError
from emostream.streams.still import check_size, decode_fitted, probe_image

NO_FACE = "(no face)"
BATCH = 64


def register(sub: argparse._SubParsersAction) -> None:
    """Flags only; MediaPipe, the engines and OpenCV load in the handler (``emostream --help`` stays fast)."""
    from emostream.edge.commands.run import add_detector_args, add_engine_args

    p = sub.add_parser("eval", help="evaluate the emotion network on a labelled image folder",
                       description="Evaluate on DIR: DIR/labels.csv (file,label), a DIR.csv beside it (FER2013 "
                                   "layout) or one sub-folder per label.")
    p.add_argument("folder", metavar="DIR")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--detect", dest="detect", action="store_true", default=True,
                   help="find and align the largest face in each image first (default)")
    g.add_argument("--no-detect", dest="detect", action="store_false",
                   help="images are already face crops (e.g. FER2013): just resize")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N images")
    add_engine_args(p)
    add_detector_args(p, video=False)
    p.set_defaults(handler=evaluate)


def evaluate(args: argparse.Namespace) -> int:
    data = load_labelled_images(args.folder)
    files, truth = list(data.files), list(data.labels)
    if args.limit:
        files, truth = files[: args.limit], truth[: args.limit]
    from emostream.engines.emotion import load_engine

    engine = load_engine(args.engine, args.model, threads=args.threads, tta=args.tta)
    detector = None
    if args.detect:
        from emostream.edge.faces import FaceDetector

        detector = FaceDetector(model=args.detector, min_score=args.min_score, runtime=args.detector_runtime)
    timer = StageTimer()
    progress = Progress(enabled=not args.json or sys.stderr.isatty(), unit="images", per="images/s")
    predicted: list[str] = []
    unreadable: list[tuple[str, str]] = []  # (path, why)
    no_face = 0
    start = time.perf_counter()
    try:
        for lo in range(0, len(files), BATCH):
            crops, slots = [], []
            for path in files[lo : lo + BATCH]:
                with timer.stage("load"):
                    crop = _crop(path, engine.input_size, detector, timer)
                if isinstance(crop, Unreadable) or crop is NO_FACE:
                    slots.append(None)
                    if crop is NO_FACE:
                        no_face += 1
                    else:
                        unreadable.append((str(path), crop.why))
                else:
                    slots.append(len(crops))
                    crops.append(crop)
            with timer.stage("infer"):
                probs = engine.run(np.stack(crops)) if crops else np.zeros((0, len(engine.labels)), np.float32)
            top = [engine.labels[i] for i in np.argmax(probs, axis=1)]
            predicted.extend(NO_FACE if s is None else top[s] for s in slots)
            progress.update(len(predicted), len(predicted) - no_face - len(unreadable))
    finally:
        progress.done()
        engine.close()
        if detector:
            detector.close()
    elapsed = time.perf_counter() - start
    if unreadable and len(unreadable) == len(files):
        # An accuracy of 0.0 over images never seen would be reported as a (terrible) result.
        first, why = unreadable[0]
        raise DatasetError(f"none of the {len(files)} images in {data.root} ({data.source}) could be read "
                           f"(first: {first}: {why})")
    faces = len(predicted) - no_face - len(unreadable)
    s = score(truth, predicted, engine.labels)
    result = {
        "n": s.n,
        "accuracy": round(s.accuracy, 4),
        "macro_f1": round(s.macro_f1, 4),
        "ms_per_face": round(timer.ms_per("infer", faces) + timer.ms_per("align", faces), 4),
        "ms_per_face_infer": round(timer.ms_per("infer", faces), 4),
        "per_class_recall": {k: round(v, 4) for k, v in s.recall().items()},
        "confusion": {"labels": list(s.classes), "matrix": s.confusion.tolist()},
        "labels_missing_from_model": {c: truth.count(c) for c in s.missing_from_model},
        "no_face": no_face,
        "unreadable": len(unreadable),
        "mode": "detect" if args.detect else "no-detect",
        "engine": engine.name,
        "model": engine.model.name,
        "data": f"{data.root} ({data.source})",
        "seconds": round(elapsed, 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        _print_report(result)
    for path, why in unreadable[:5]:
        print(f"emostream: warning: could not read image {path}: {why}", file=sys.stderr)
    if len(unreadable) > 5:
        print(f"emostream: warning: … and {len(unreadable) - 5} more unreadable images", file=sys.stderr)
    return 0


@dataclass(frozen=True)
class Unreadable:
    """Why an image gave no pixels; counted as wrong and reported, never silently dropped."""

    why: str


def _read(path, *, gray: bool) -> np.ndarray | Unreadable:
    """Decode an image (grey, or RGB) under the same size rules as ``emostream run`` (streams.still).

    A giant image is fitted to 4096 px while decoding, and one past the pixel limits is refused from
    its header: one bomb in a folder must not take the evaluation down (it is counted unreadable).
    """
    import cv2

    try:
        header = probe_image(path)
        if header is not None:
            check_size(header, "it")
            if header.oversized:
                rgb = decode_fitted(path, header, "it")
                return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if gray else rgb
    except SourceError as exc:
        return Unreadable(str(exc))
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    if image is None:
        return Unreadable("not a decodable image")
    return image if gray else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _crop(path, size: int, detector, timer: StageTimer) -> np.ndarray | str | Unreadable:
    """The network's input for one image: largest detected face, or the whole image as a crop.

    :class:`Unreadable` means the image could not be decoded; ``NO_FACE`` that it decoded but holds no face.
    """
    image = _read(path, gray=detector is None)
    if isinstance(image, Unreadable):
        return image
    if detector is None:
        import cv2

        return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    rgb = image
    with timer.stage("detect"):
        faces = detector.detect(rgb)
    if not len(faces):
        return NO_FACE
    from emostream.edge.faces import align_faces

    largest = int(np.argmax(faces.boxes[:, 2] * faces.boxes[:, 3]))
    with timer.stage("align"):
        return align_faces(rgb, faces[[largest]], size=size, gray=True)[0]


def _print_report(r: dict) -> None:
    print(f"data: {r['data']}, {r['n']} images, mode {r['mode']}, engine {r['engine']}/{r['model']}")
    print(f"accuracy {r['accuracy']:.4f}   macro-F1 {r['macro_f1']:.4f}   "
          f"{r['ms_per_face']:.3f} ms/face (infer {r['ms_per_face_infer']:.3f})   {r['seconds']:.1f} s")
    if r["no_face"] or r["unreadable"]:
        print(f"no face found: {r['no_face']}   unreadable: {r['unreadable']} (both counted as wrong)")
    for label, n in r["labels_missing_from_model"].items():
        print(f"note: the model has no '{label}' output; its {n} image(s) count as wrong")
    print("recall: " + "  ".join(f"{k} {v:.3f}" for k, v in r["per_class_recall"].items()))
    labels, matrix = r["confusion"]["labels"], r["confusion"]["matrix"]
    width = max(8, *(len(x) for x in labels))
    print("confusion (rows true, columns predicted):")
    print(" " * width + "".join(f"{x[:8]:>9}" for x in labels))
    for name, row in zip(labels, matrix):
        if any(row):
            print(f"{name:<{width}}" + "".join(f"{v:>9}" for v in row))
