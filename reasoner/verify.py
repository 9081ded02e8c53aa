"""SEKE-style self-verification: is an answer consistent across its three grains?

A VLM can name "happy" while reporting negative valence and brow-lowering AUs; such an answer is
internally contradictory and should not reach the edge as if it were a judgement. Following SEKE
(self-verification across knowledge grains), every answer is checked on three pairwise rules; a
failing answer is resampled up to K times and the most consistent majority wins.

The rules (sources in ``knowledge.py``):

1. **expression <-> valence/arousal** (Russell 1980 circumplex): each expression owns a region of the
   VA plane -- happy: valence > 0; sad: valence < 0 and arousal not high; fear and anger: valence < 0
   and arousal > 0; disgust and contempt: valence < 0; surprise: arousal > 0 (either valence,
   surprise is the one emotion the circumplex puts near the valence midline); neutral: both near 0.
   A margin of ``VA_MARGIN`` absorbs annotation noise around the axes.
2. **expression <-> AUs** (Ekman & Friesen FACS / EMFACS prototypes): at least half of the
   expression's prototype AUs are reported (happy needs AU6 or AU12, surprise two of AU1, AU2, AU5,
   AU26, ...), and for neutral no AU is reported strongly (intensity > 0.5).
3. **AUs <-> valence/arousal**: the expression the AUs alone point to (best prototype overlap) has a
   VA region that contains the answer's valence/arousal. This closes the triangle: an answer whose
   AUs say "anger" while its VA says "happy" fails even if the label matches one of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .knowledge import AU_PROTOTYPES
from .schema import Answer

#: Tolerance around the circumplex axes (AffectNet VA labels scatter by about this much).
VA_MARGIN = 0.15
#: AUs weaker than this are treated as absent (FACS intensity A, "trace").
AU_PRESENT = 0.2


def va_consistent(expression: str, valence: float, arousal: float) -> bool:
    """Rule 1 -- Russell (1980) quadrant for the expression."""
    m = VA_MARGIN
    rules = {
        "neutral": abs(valence) <= 0.4 + m and abs(arousal) <= 0.4 + m,
        "happy": valence > -m,
        "sad": valence < m and arousal < 0.3 + m,
        "surprise": arousal > -m,
        "fear": valence < m and arousal > -m,
        "anger": valence < m and arousal > -m,
        "disgust": valence < m,
        "contempt": valence < m,
    }
    return rules.get(expression, True)


def present_aus(answer: Answer) -> set[str]:
    return {au for au, i in answer.aus if i >= AU_PRESENT}


def au_consistent(expression: str, aus: set[str], strong: set[str]) -> bool:
    """Rule 2 -- EMFACS prototype coverage of at least one half."""
    proto = AU_PROTOTYPES.get(expression)
    if proto is None:
        return True  # a label without a prototype cannot be checked; do not fail it
    if not proto:  # neutral: no strongly active AU
        return not strong
    return len(aus & set(proto)) * 2 >= len(proto)


def au_expression(aus: set[str]) -> str | None:
    """The expression the AUs alone point to: best Jaccard overlap with a prototype (None if no AUs)."""
    if not aus:
        return "neutral"
    best, score = None, 0.0
    for label, proto in AU_PROTOTYPES.items():
        if not proto:
            continue
        s = len(aus & set(proto)) / len(aus | set(proto))
        if s > score:
            best, score = label, s
    return best


@dataclass(frozen=True)
class Checks:
    va: bool
    au: bool
    au_va: bool

    @property
    def score(self) -> float:
        return (self.va + self.au + self.au_va) / 3.0

    @property
    def ok(self) -> bool:
        return self.va and self.au and self.au_va


def check(answer: Answer) -> Checks:
    """Run the three cross-grain rules on one answer."""
    aus = present_aus(answer)
    strong = {au for au, i in answer.aus if i > 0.5}
    implied = au_expression(aus)
    return Checks(
        va=va_consistent(answer.expression, answer.valence, answer.arousal),
        au=au_consistent(answer.expression, aus, strong),
        au_va=implied is None or va_consistent(implied, answer.valence, answer.arousal),
    )


@dataclass(frozen=True)
class Verdict:
    answer: Answer
    verified: bool
    agreement: float  # share of (valid) samples that named the chosen expression
    samples: int  # samples drawn, valid or not
    invalid: int  # samples that did not even parse against the schema


def choose(samples: Sequence[Answer | None]) -> Verdict | None:
    """Most consistent majority over the samples (``None`` entries failed to parse).

    Majority vote over the consistent samples when there are any (a contradictory answer should
    not outvote a coherent one), otherwise over all valid samples; within the winning expression
    the most consistent sample is the reply.
    """
    valid = [a for a in samples if a is not None]
    if not valid:
        return None
    checks = [check(a) for a in valid]
    pool = [i for i, c in enumerate(checks) if c.ok] or list(range(len(valid)))
    votes = Counter(valid[i].expression for i in pool)
    top = max(votes.values())
    # Tie-break by mean consistency, then by first appearance (deterministic).
    winners = [e for e in votes if votes[e] == top]
    expr = max(winners, key=lambda e: sum(checks[i].score for i in pool if valid[i].expression == e))
    best = max((i for i in pool if valid[i].expression == expr), key=lambda i: checks[i].score)
    agreement = sum(a.expression == expr for a in valid) / len(valid)
    return Verdict(valid[best], checks[best].ok, agreement, len(samples), len(samples) - len(valid))
