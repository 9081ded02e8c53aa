"""``emostream reasoner …`` (the GPU-side service) and ``emostream keys DIR`` (CURVE key pairs)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from .core import DEFAULT_RESAMPLE_K, Reasoner
from .knowledge import KnowledgeEngine


class ReasonerCommandError(ValueError):
    """Bad command-line input for the reasoner commands (one line, exit 2)."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "reasoner",
        help="run the VLM reasoner service (ZeroMQ ROUTER)",
        description="Serve keyframe escalations from edges: batch, ask the VLM (or the knowledge engine), "
        "self-verify, fuse, reply.",
    )
    p.add_argument("--bind", required=True, help="endpoint to bind, e.g. tcp://0.0.0.0:5555")
    p.add_argument("--keys", metavar="DIR", help="CURVE keys directory from `emostream keys DIR`")
    p.add_argument("--insecure", action="store_true", help="allow plain TCP on a non-loopback address")
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--vlm", metavar="PATH", help="local transformers VLM directory (image-text-to-text)")
    engine.add_argument("--vlm-url", metavar="URL", help="OpenAI-compatible server, e.g. http://gpu:8000/v1")
    p.add_argument("--adapter", metavar="DIR", help="LoRA adapter for --vlm (`emostream tune-vlm` output)")
    p.add_argument("--vlm-model", default="default", help="model name sent to --vlm-url (default: %(default)s)")
    p.add_argument("--vlm-timeout", type=float, default=30.0, help="HTTP timeout in s for --vlm-url")
    p.add_argument("--max-new-tokens", type=int, default=512, help="decode budget for --vlm")
    p.add_argument("--max-batch", type=int, default=8, help="most keyframes per engine call")
    p.add_argument("--max-wait-ms", type=float, default=20.0, help="longest a keyframe waits for a batch")
    p.add_argument(
        "--resample",
        type=int,
        default=DEFAULT_RESAMPLE_K,
        metavar="K",
        help="SEKE: at most K answers per keyframe when verification fails",
    )
    p.add_argument("--gate", metavar="FILE", help="fitted fusion gate (calibration.fusion.fit_gate + save_gate)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for --vlm")
    p.add_argument("--device", default="auto", help="torch device for --vlm: auto (cuda if present), cpu, cuda:N")
    p.set_defaults(handler=run_reasoner)

    k = sub.add_parser(
        "keys",
        help="make CURVE key pairs for the reasoner and an edge",
        description="Create DIR/server.key(_secret), DIR/NAME.key(_secret) and allow-list "
        "NAME in DIR/authorized/. Copy server.key + NAME.key_secret to the edge.",
    )
    k.add_argument("dir", metavar="DIR")
    k.add_argument("--client", default="client", metavar="NAME", help="client key name (default: %(default)s)")
    k.set_defaults(handler=run_keys)


def run_keys(args: argparse.Namespace) -> int:
    from emostream.keys import make_keys

    for path in make_keys(args.dir, args.client):
        print(path)
    return 0


def build_reasoner(args: argparse.Namespace) -> Reasoner:
    """The engine the flags ask for (imports torch/transformers only for ``--vlm``)."""
    for name, value, lo in (("--max-batch", args.max_batch, 1), ("--resample", args.resample, 1)):
        if value < lo:
            raise ReasonerCommandError(f"{name} must be at least {lo}")
    if args.max_wait_ms < 0:
        raise ReasonerCommandError("--max-wait-ms must not be negative")
    if getattr(args, "adapter", None) and not args.vlm:
        raise ReasonerCommandError("--adapter needs --vlm VLM_DIR (a server behind --vlm-url loads its own adapters)")
    gate = None
    if args.gate:
        from .fusion import load_gate

        gate = load_gate(args.gate)
    from .schema import answer_json_schema, answer_lark_grammar

    if args.vlm:
        from emostream.engines.vlm.transformers_engine import TransformersEngine

        engine: Any = TransformersEngine(
            args.vlm,
            grammar_fn=answer_lark_grammar,
            max_new_tokens=args.max_new_tokens,
            threads=args.threads,
            device=args.device,
            adapter=getattr(args, "adapter", None),
        )
    elif args.vlm_url:
        from emostream.engines.vlm.openai_engine import OpenAIEngine

        engine = OpenAIEngine(
            args.vlm_url, model=args.vlm_model, schema_fn=answer_json_schema, timeout_s=args.vlm_timeout
        )
    else:
        engine = KnowledgeEngine()
    return Reasoner(engine=engine, resample_k=args.resample, gate=gate)


def run_reasoner(args: argparse.Namespace) -> int:
    from .service import ServiceConfig, serve

    config = ServiceConfig(
        bind=args.bind,
        keys_dir=args.keys,
        insecure=args.insecure,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )
    from emostream.keys import require_secure

    try:
        require_secure(config.bind, config.keys_dir, config.insecure)  # fail before loading a big model
    except ValueError as exc:
        raise ReasonerCommandError(str(exc)) from None
    reasoner = build_reasoner(args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve(reasoner, config, stop, log=sys.stderr)
    return 0
