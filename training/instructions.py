"""EmoVIT-style emotion instruction data, kept only where a SEKE check says the teacher is consistent.

For each labelled face, a *teacher* gives a structured answer (expression, valence/arousal, action units,
rationale: the reasoner's answer schema). The answer is checked across its three grains with the reasoner's
own rules (``reasoner.verify.check``: expression <-> VA <-> AUs) and against the ground-truth label; an
answer that fails is resampled (up to K answers per face), and a face whose K answers all fail is rejected
for that kind -- SEKE's filter, so the tuning data never teaches a contradiction or a wrong label.
A kept answer is written as conversations of EmoVIT's three kinds (Xie et al., CVPR 2024):

* ``categorical`` -- the reasoner's own instruction (candidate labels listed) answered with the answer JSON,
  so tuning teaches exactly the prompt and output the reasoner uses at run time;
* ``reasoning``  -- "what is this person feeling and what in the face shows it", answered in prose grounded
  in the visible action units (needs at least one AU unless the label is neutral);
* ``conversation`` -- a short multi-turn exchange: the state, its pleasantness/activation, the face cues.

Teachers: the embedded knowledge engine (``knowledge``; the emotion network's probabilities + the priors, on
the CPU), a local transformers VLM directory or an OpenAI-compatible server. The knowledge teacher resamples by
showing the network another *view* of the face (mirror, small shift/zoom, brightness): its answer is
deterministic for one view, and disagreement across views is exactly the uncertainty SEKE resamples on.
A VLM teacher resamples by sampling (temperature), as the reasoner does.

Records use the LLaVA / ShareGPT layout (``conversations`` of ``from: human|gpt``, ``<image>`` in the first
human turn, ``image`` the path) that LLaVA, LLaMA-Factory, ms-swift and ``emostream tune-vlm`` read.

Why this module imports the reasoner's knowledge, verify, schema and prompts (an exception to "training does
not use the reasoner" in pyproject's import contracts, narrowed to this module): the data must be checked by
the very rules and asked with the very prompt the reasoner applies at run time; a copy would drift.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emostream.contract import MAX_RATIONALE
from emostream.datasets import DatasetError, load_labelled_images
from emostream.engines.vlm import VLMError, VLMPrompt
from emostream.reasoner.knowledge import KnowledgeEngine
from emostream.reasoner.prompts import SYSTEM_PROMPT, emotion_instruction
from emostream.reasoner.schema import Answer, AnswerError, parse_answer
from emostream.reasoner.verify import check, present_aus

KINDS: tuple[str, ...] = ("categorical", "reasoning", "conversation")
#: Default SEKE budget: at most K teacher answers per face (the reasoner's default too).
DEFAULT_K = 3
#: Faces per teacher call (one ONNX batch; one VLM batch).
CHUNK = 16

#: FACS names (Ekman & Friesen 1978) of the AUs the contract allows, for the prose answers.
AU_NAMES: dict[str, str] = {
    "AU1": "inner brows raised", "AU2": "outer brows raised", "AU4": "brows lowered and drawn together",
    "AU5": "upper lids raised", "AU6": "cheeks raised", "AU7": "lids tightened", "AU9": "nose wrinkled",
    "AU10": "upper lip raised", "AU12": "lip corners pulled up", "AU14": "dimpler",
    "AU15": "lip corners pulled down", "AU16": "lower lip depressed", "AU17": "chin raised",
    "AU20": "lips stretched", "AU23": "lips tightened", "AU24": "lips pressed", "AU25": "lips parted",
    "AU26": "jaw dropped",
}
ADJECTIVE: dict[str, str] = {
    "neutral": "calm and neutral", "happy": "happy", "sad": "sad", "surprise": "surprised", "fear": "afraid",
    "disgust": "disgusted", "anger": "angry", "contempt": "contemptuous",
}
REASONING_QUESTIONS = (
    "What is this person feeling, and what in their face shows it? Name the facial action units you see.",
    "Describe the emotion on this face and explain which facial muscle movements reveal it.",
    "Which emotion does this person express? Reason from the visible facial action units.",
)
CONVERSATION_OPENERS = ("How is this person feeling right now?", "What mood is this person in?",
                        "How would you describe this person's emotional state?")
CONVERSATION_AFFECT = ("Is that a pleasant or an unpleasant feeling, and how activated are they?",
                       "How pleasant is it for them, and how calm or excited do they seem?")
CONVERSATION_CUES = ("What in their face gives it away?", "Which facial movements tell you that?")


class InstructionError(ValueError):
    """Bad input for ``emostream instructions`` (one line, exit 2)."""


# --------------------------------------------------------------------------- faces


def read_face(path: Path, size: int) -> tuple[np.ndarray, bytes]:
    """(grayscale ``size``x``size`` crop for the network, JPEG bytes of the image for a VLM).

    The folder is taken to hold face crops (FER2013 and most labelled-face sets do): the network sees the
    whole image resized, as ``emostream eval --no-detect`` does. Raises :class:`InstructionError` if the
    file does not decode.
    """
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise InstructionError(f"{path}: not a decodable image")
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_LINEAR), bytes(jpeg)


def view(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another plausible view of a face crop: mirror, shift/zoom by a few percent, brightness/contrast."""
    import cv2

    s = crop.shape[0]
    out = crop[:, ::-1] if rng.random() < 0.5 else crop
    zoom = rng.uniform(0.92, 1.08)
    angle = rng.uniform(-8, 8)
    m = cv2.getRotationMatrix2D((s / 2, s / 2), angle, zoom)
    m[:, 2] += rng.uniform(-0.05, 0.05, size=2) * s
    out = cv2.warpAffine(np.ascontiguousarray(out), m, (s, s), borderMode=cv2.BORDER_REFLECT)
    gain, bias = rng.uniform(0.85, 1.15), rng.uniform(-15, 15)
    return np.clip(out.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- teachers

#: One sample: a parsed answer, or the reason there is none ("unparseable", "engine: ...").
Sample = Answer | str


class KnowledgeTeacher:
    """The knowledge engine on the emotion network's probabilities; resamples on other views of the face."""

    def __init__(self, model: str | None = None, threads: int | None = None, seed: int = 0) -> None:
        from emostream.engines.emotion import load_engine
        from emostream.engines.emotion.card import DEFAULT_MODEL

        self.engine = load_engine("onnxruntime", model or DEFAULT_MODEL, threads=threads)
        self.labels: tuple[str, ...] = tuple(self.engine.labels)
        self.input_size = int(self.engine.input_size)
        self.name = f"knowledge:{self.engine.model.name}"
        self.seed = seed
        self._knowledge = KnowledgeEngine()

    def sample(self, faces: Sequence[Face], attempt: int, n: int) -> list[list[Sample]]:
        """``n`` answers per face; ``attempt`` 0 with n=1 is the plain view, the rest are seeded other views."""
        crops, owners = [], []
        for f in faces:
            for j in range(n):
                if attempt == 0 and j == 0:
                    crops.append(f.crop)
                else:
                    rng = np.random.default_rng((self.seed, f.index, attempt, j))
                    crops.append(view(f.crop, rng))
                owners.append(f)
        probs = self.engine.run(np.stack(crops))
        out: list[list[Sample]] = [[] for _ in faces]
        for k, p in enumerate(probs):
            answer = self._knowledge.answer(list(self.labels), p.tolist())
            out[k // n].append(answer)
        return out

    def close(self) -> None:
        self.engine.close()


class VLMTeacher:
    """A VLM engine (transformers directory or OpenAI-compatible server) asked the reasoner's instruction."""

    def __init__(self, engine: Any, labels: tuple[str, ...], input_size: int = 48, serial: bool = False) -> None:
        self.engine = engine
        self.labels = labels
        self.input_size = input_size
        self.name = str(engine.name)
        # A local model is one torch module: concurrent generate() calls would only fight over it.
        self._lock = threading.Lock() if serial else None

    def sample(self, faces: Sequence[Face], attempt: int, n: int) -> list[list[Sample]]:
        prompts = [VLMPrompt(f.jpeg, emotion_instruction(self.labels), SYSTEM_PROMPT, self.labels) for f in faces]
        if self._lock is not None:
            with self._lock:
                replies = self.engine.generate(prompts, n)
        else:
            replies = self.engine.generate(prompts, n)
        out: list[list[Sample]] = []
        for texts in replies:
            if isinstance(texts, VLMError):
                out.append([f"engine: {texts}"] * n)
                continue
            row: list[Sample] = []
            for t in texts:
                try:
                    row.append(parse_answer(t, self.labels))
                except AnswerError:
                    row.append("unparseable")
            out.append(row)
        return out

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close:
            close()


def build_teacher(
    teacher: str = "knowledge",
    *,
    url: str | None = None,
    model_name: str = "default",
    labels: tuple[str, ...] | None = None,
    emotion_model: str | None = None,
    threads: int | None = None,
    workers: int = 1,
    seed: int = 0,
    max_new_tokens: int = 400,
    adapter: str | None = None,
    device: str = "auto",
) -> KnowledgeTeacher | VLMTeacher:
    """The teacher the flags name (heavy imports only for the kind asked for)."""
    if url:
        from emostream.engines.vlm.openai_engine import OpenAIEngine
        from emostream.reasoner.schema import answer_json_schema

        engine = OpenAIEngine(url, model=model_name, schema_fn=answer_json_schema, concurrency=max(1, workers))
        return VLMTeacher(engine, labels or _default_labels(emotion_model))
    if teacher == "knowledge":
        return KnowledgeTeacher(emotion_model, threads, seed)
    path = Path(teacher)
    if not path.is_dir():
        raise InstructionError(f"--teacher must be 'knowledge' or a local VLM directory; {teacher!r} is neither")
    from emostream.engines.vlm.transformers_engine import TransformersEngine
    from emostream.reasoner.schema import answer_lark_grammar

    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
    engine = TransformersEngine(path, grammar_fn=answer_lark_grammar, max_new_tokens=max_new_tokens,
                                threads=threads, device=device, adapter=adapter)
    return VLMTeacher(engine, labels or _default_labels(emotion_model), serial=True)


def _default_labels(emotion_model: str | None) -> tuple[str, ...]:
    """A VLM teacher is offered the emotion network's labels, so its data matches what the edge escalates."""
    from emostream.engines.emotion.card import DEFAULT_MODEL, load_model_info

    return tuple(load_model_info(emotion_model or DEFAULT_MODEL).labels)


# --------------------------------------------------------------------------- verification


@dataclass
class Face:
    index: int
    path: Path
    label: str
    crop: np.ndarray
    jpeg: bytes


def reject_reason(kind: str, sample: Sample, label: str) -> str | None:
    """Why this sample cannot teach ``kind`` for a face labelled ``label`` (None: keep it).

    Every kind needs a consistent answer on all three grains (SEKE) that names the true label; the reasoning
    kind also needs visible AUs to reason from (a non-neutral face explained by no AU teaches nothing).
    """
    if isinstance(sample, str):
        return sample.split(":")[0]
    c = check(sample)
    if not c.va:
        return "va_inconsistent"
    if not c.au:
        return "au_inconsistent"
    if not c.au_va:
        return "au_va_inconsistent"
    if sample.expression != label:
        return "wrong_label"
    if kind == "reasoning" and label != "neutral" and not present_aus(sample):
        return "no_aus"
    return None


@dataclass
class Outcome:
    """Per face: the kept answer per kind (or the reasons it was rejected) and how many samples were drawn."""

    face: Face
    kept: dict[str, Answer] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    samples: int = 0
    engine_error: str = ""  # the teacher's first error message for this face, if any


def verify_chunk(teacher: Any, faces: list[Face], k: int) -> list[Outcome]:
    """SEKE over one chunk: one answer each, then K-1 more for the faces some kind could not use yet."""
    outcomes = [Outcome(f) for f in faces]
    pools: list[list[Sample]] = [[] for _ in faces]
    for f, o in zip(faces, outcomes):
        if f.label not in teacher.labels:
            o.rejected = {kind: "label_not_offered" for kind in KINDS}
    todo = [i for i, o in enumerate(outcomes) if not o.rejected]
    if todo:
        first = teacher.sample([faces[i] for i in todo], 0, 1)
        for i, s in zip(todo, first):
            pools[i].extend(s)
    retry = [i for i in todo if any(_pick(kind, pools[i], faces[i].label)[0] is None for kind in KINDS)]
    if retry and k > 1:
        more = teacher.sample([faces[i] for i in retry], 1, k - 1)
        for i, s in zip(retry, more):
            pools[i].extend(s)
    for i in todo:
        o = outcomes[i]
        o.samples = len(pools[i])
        o.engine_error = next((s for s in pools[i] if isinstance(s, str) and s.startswith("engine:")), "")
        for kind in KINDS:
            answer, why = _pick(kind, pools[i], faces[i].label)
            if answer is None:
                o.rejected[kind] = why
            else:
                o.kept[kind] = answer
    return outcomes


def _pick(kind: str, pool: list[Sample], label: str) -> tuple[Answer | None, str]:
    """The first usable sample for ``kind``, else the most common reason the samples failed."""
    reasons = []
    for s in pool:
        why = reject_reason(kind, s, label)
        if why is None:
            assert isinstance(s, Answer)
            return s, ""
        reasons.append(why)
    return None, Counter(reasons).most_common(1)[0][0] if reasons else "no_sample"


# --------------------------------------------------------------------------- rendering


def answer_json(a: Answer) -> str:
    return json.dumps({"expression": a.expression, "valence": round(a.valence, 2), "arousal": round(a.arousal, 2),
                       "aus": [{"au": au, "intensity": round(i, 2)} for au, i in a.aus], "rationale": a.rationale},
                      separators=(",", ":"))


def au_phrase(a: Answer) -> str:
    """The visible AUs in words, strongest first: "cheeks raised (AU6) and lip corners pulled up (AU12)"."""
    aus = sorted(((i, au) for au, i in a.aus if au in present_aus(a)), reverse=True)
    parts = [f"{AU_NAMES.get(au, au)} ({au})" for _, au in aus]
    if not parts:
        return "a relaxed face with no clear muscle action"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def affect_phrase(a: Answer) -> str:
    def level(x: float, low: str, high: str) -> str:
        if abs(x) < 0.15:
            return "neither " + low + " nor " + high
        strength = "very " if abs(x) > 0.6 else ("fairly " if abs(x) > 0.3 else "slightly ")
        return strength + (high if x > 0 else low)

    return (f"The feeling is {level(a.valence, 'unpleasant', 'pleasant')} (valence {a.valence:+.2f}) and "
            f"{level(a.arousal, 'calm', 'excited')} (arousal {a.arousal:+.2f}).")


def grounded_rationale(a: Answer) -> str:
    """A visual rationale from the verified grains (the knowledge engine's own one cites network numbers)."""
    text = f"{au_phrase(a)}: a {ADJECTIVE.get(a.expression, a.expression)} look"
    if len(text) > MAX_RATIONALE:  # the contract's bound; keep whole AU phrases
        text = text[: MAX_RATIONALE - 1].rsplit(",", 1)[0] + "…"
    return text


def render(kind: str, a: Answer, labels: tuple[str, ...], rng: np.random.Generator) -> list[dict[str, str]]:
    """The conversation turns of one kind for one verified answer (LLaVA ``from``/``value`` turns)."""
    adj = ADJECTIVE.get(a.expression, a.expression)
    if kind == "categorical":
        return [{"from": "human", "value": "<image>\n" + emotion_instruction(labels)},
                {"from": "gpt", "value": answer_json(a)}]
    if kind == "reasoning":
        why = (f"The person looks {adj}. I can see {au_phrase(a)}, the facial actions that signal "
               f"{a.expression} in the Facial Action Coding System. {affect_phrase(a)}")
        return [{"from": "human", "value": "<image>\n" + str(rng.choice(REASONING_QUESTIONS))},
                {"from": "gpt", "value": why}]
    if kind == "conversation":
        return [{"from": "human", "value": "<image>\n" + str(rng.choice(CONVERSATION_OPENERS))},
                {"from": "gpt", "value": f"They look {adj}." if adj == a.expression else
                 f"They look {adj} ({a.expression})."},
                {"from": "human", "value": str(rng.choice(CONVERSATION_AFFECT))},
                {"from": "gpt", "value": affect_phrase(a)},
                {"from": "human", "value": str(rng.choice(CONVERSATION_CUES))},
                {"from": "gpt", "value": f"Mostly {au_phrase(a)}."}]
    raise InstructionError(f"unknown instruction kind {kind!r}")


def records(o: Outcome, teacher: Any, root: Path, seed: int) -> Iterator[dict[str, Any]]:
    """The JSONL records of one face's kept kinds."""
    rel = os.path.relpath(o.face.path, root)
    for kind in KINDS:
        a = o.kept.get(kind)
        if a is None:
            continue
        if isinstance(teacher, KnowledgeTeacher):
            a = Answer(a.expression, a.valence, a.arousal, a.aus, grounded_rationale(a))
        rng = np.random.default_rng((seed, o.face.index, KINDS.index(kind)))
        yield {
            "id": f"{rel}#{kind}",
            "image": str(o.face.path.resolve()),
            "images": [str(o.face.path.resolve())],
            "system": SYSTEM_PROMPT,
            "conversations": render(kind, a, teacher.labels, rng),
            "kind": kind,
            "label": o.face.label,
            "teacher": teacher.name,
            "samples": o.samples,
        }


# --------------------------------------------------------------------------- the whole run


@dataclass
class Summary:
    faces: int = 0
    unreadable: int = 0
    samples: int = 0
    kept: Counter = field(default_factory=Counter)  # kind -> faces
    rejected: Counter = field(default_factory=Counter)  # kind -> faces
    kept_label: Counter = field(default_factory=Counter)  # label -> kind-answers kept (faces x kinds)
    rejected_label: Counter = field(default_factory=Counter)  # label -> kind-answers rejected
    reasons: Counter = field(default_factory=Counter)  # reason -> kind-answers
    engine_errors: int = 0  # faces whose teacher answered with an error at least once
    first_engine_error: str = ""

    def add(self, o: Outcome) -> None:
        self.faces += 1
        if o.engine_error:
            self.engine_errors += 1
            self.first_engine_error = self.first_engine_error or o.engine_error
        self.samples += o.samples
        for kind, _ in o.kept.items():
            self.kept[kind] += 1
            self.kept_label[o.face.label] += 1
        for kind, why in o.rejected.items():
            self.rejected[kind] += 1
            self.rejected_label[o.face.label] += 1
            self.reasons[why] += 1

    def to_json(self) -> dict[str, Any]:
        return {"faces": self.faces, "unreadable": self.unreadable, "teacher_samples": self.samples,
                "records": sum(self.kept.values()), "teacher_errors": self.engine_errors,
                "kept_per_kind": dict(self.kept), "rejected_per_kind": dict(self.rejected),
                "kept_per_label": dict(self.kept_label), "rejected_per_label": dict(self.rejected_label),
                "reject_reasons": dict(self.reasons)}

    def table(self) -> str:
        lines = [f"{'faces per kind':14s} {'kept':>6s} {'rejected':>9s}"]
        for kind in KINDS:
            lines.append(f"{kind:14s} {self.kept[kind]:6d} {self.rejected[kind]:9d}")
        lines.append(f"{'per label':14s} {'(faces x kinds)':>16s}")
        for label in sorted(set(self.kept_label) | set(self.rejected_label)):
            lines.append(f"{label:14s} {self.kept_label[label]:6d} {self.rejected_label[label]:9d}")
        why = ", ".join(f"{k} {v}" for k, v in self.reasons.most_common()) or "none"
        lines.append(f"reject reasons (kind-answers): {why}")
        return "\n".join(lines)


def select(n: int, limit: int | None, seed: int) -> list[int]:
    """Indices of the faces to use: all, or a seeded random ``limit`` of them in folder order.

    Random, not the first N: labelled folders are sorted by label, and the first 50 FER2013 faces are all angry.
    """
    if not limit or limit >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).permutation(n)[:limit].tolist())


def generate(
    data: str | Path,
    out: str | Path,
    teacher: Any,
    *,
    k: int = DEFAULT_K,
    limit: int | None = None,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> Summary:
    """Write the verified instruction records for DATA to ``out`` (atomically); return the summary."""
    if k < 1:
        raise InstructionError("--resample K must be at least 1")
    if workers < 1:
        raise InstructionError("--workers must be at least 1")
    out = Path(out)
    if out.is_dir():
        raise InstructionError(f"output {out} is a directory (name a .jsonl file)")
    if out.exists() and not overwrite:
        raise InstructionError(f"output {out} exists (pass --overwrite to replace it)")
    if not out.parent.is_dir():
        raise InstructionError(f"output folder {out.parent} does not exist")
    try:
        found = load_labelled_images(data)
    except DatasetError as exc:
        raise InstructionError(str(exc)) from None
    chosen = select(len(found), limit, seed)
    summary = Summary()
    chunks = [chosen[i : i + CHUNK] for i in range(0, len(chosen), CHUNK)]

    def work(idx: list[int]) -> tuple[list[Outcome], list[str]]:
        faces, bad = [], []
        for i in idx:
            try:
                crop, jpeg = read_face(found.files[i], teacher.input_size)
            except InstructionError as exc:
                bad.append(str(exc))
                continue
            faces.append(Face(i, found.files[i], found.labels[i], crop, jpeg))
        return (verify_chunk(teacher, faces, k) if faces else []), bad

    from tqdm import tqdm

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    bar = tqdm(total=len(chosen), unit="face", disable=not progress, dynamic_ncols=True)
    try:
        with open(tmp, "w", encoding="utf-8") as fh, ThreadPoolExecutor(max_workers=workers) as pool:
            for outcomes, bad in pool.map(work, chunks):
                for line in bad:
                    summary.unreadable += 1
                    if warn:
                        warn(f"skipped (counted): {line}")
                for o in outcomes:
                    summary.add(o)
                    for rec in records(o, teacher, found.root, seed):
                        fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                bar.update(len(outcomes) + len(bad))
                bar.set_postfix(kept=sum(summary.kept.values()), rejected=sum(summary.rejected.values()))
        if summary.faces == 0:
            raise InstructionError(f"none of the {len(chosen)} images in {data} could be read")
        if summary.engine_errors == summary.faces and not summary.kept:
            # A dead server or a broken model is not "every face rejected": say so, and write nothing.
            raise InstructionError(f"the teacher failed on every face ({summary.first_engine_error})")
        if not summary.kept and warn:
            warn(f"no answer of the teacher passed the checks on {summary.faces} faces; {out} has no records")
        if summary.engine_errors and warn:
            warn(f"the teacher failed on {summary.engine_errors} of {summary.faces} faces (counted as rejected; "
                 f"first: {summary.first_engine_error})")
        os.replace(tmp, out)
    finally:
        bar.close()
        if tmp.exists():
            tmp.unlink()
    return summary
