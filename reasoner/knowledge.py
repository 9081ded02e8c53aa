"""Emotion-knowledge priors and the ``knowledge`` engine (the embedded default; no VLM at all).

The priors tie the three grains of an answer together -- expression, valence/arousal, action
units -- and are used twice: by the knowledge engine to build an answer from the network's
probabilities, and by SEKE self-verification (``verify.py``) to check a VLM's answer.

Sources (written down here because every rule in ``verify.py`` points back to them):

* Valence/arousal: the one circumplex table of the contract (``emostream.contract.CIRCUMPLEX_PROTOTYPES``:
  Russell, J. A. (1980), "A circumplex model of affect", Fig. 4; disgust and contempt by assumption) --
  the same prototypes the edge uses for every frame's valence/arousal, so a reply and the frames it
  answers agree. (This module had its own table with different numbers until issue 10.)
* Action units: Ekman & Friesen, Facial Action Coding System (1978) and the EMFACS prototypes
  (Friesen & Ekman 1983; summarised in Matsumoto & Ekman 2008, and in Lucey et al. 2010, CK+
  Table 2): happy AU6+AU12; sad AU1+AU4+AU15; surprise AU1+AU2+AU5B+AU26; fear AU1+AU2+AU4+AU5+
  AU7+AU20+AU26; anger AU4+AU5+AU7+AU23; disgust AU9+AU15+AU16; contempt AU12+AU14 (unilateral).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from emostream.contract import CIRCUMPLEX_PROTOTYPES

from .schema import Answer

#: (valence, arousal) centre per expression: the contract's table itself (not a copy; see the module docstring).
VA_PRIOR: Mapping[str, tuple[float, float]] = CIRCUMPLEX_PROTOTYPES

#: Prototypical action units per expression -- Ekman & Friesen FACS / EMFACS (see module docstring).
#: AU5B in the surprise prototype is AU5 at intensity B (slight); contempt's AU12+AU14 is unilateral,
#: which a list of AU ids cannot express, so the check only asks for the AUs themselves.
AU_PROTOTYPES: dict[str, tuple[str, ...]] = {
    "neutral": (),
    "happy": ("AU6", "AU12"),
    "sad": ("AU1", "AU4", "AU15"),
    "surprise": ("AU1", "AU2", "AU5", "AU26"),
    "fear": ("AU1", "AU2", "AU4", "AU5", "AU7", "AU20", "AU26"),
    "anger": ("AU4", "AU5", "AU7", "AU23"),
    "disgust": ("AU9", "AU15", "AU16"),
    "contempt": ("AU12", "AU14"),
}

#: Typical intensity of a prototype AU when the expression is fully present (FACS B-D range);
#: the knowledge engine scales it by the network's confidence.
_AU_FULL = 0.8


@dataclass(frozen=True)
class KnowledgeEngine:
    """Answer from the per-frame probabilities and the priors alone (no VLM, no GPU).

    Why it exists: the embedded default must work on a CPU box with no model weights, and still
    give the downstream consumer the same answer shape (expression, VA, AUs, rationale) -- every
    reply says ``engine: knowledge`` so nobody mistakes it for a VLM's judgement.
    """

    name: str = "knowledge"

    def answer(self, labels: list[str], probs: list[float], va: list[float] | None = None) -> Answer:
        p = np.asarray(probs, dtype=np.float64)
        p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1.0 / len(p))
        order = np.argsort(-p)
        top = labels[int(order[0])]
        # Valence/arousal: probability-weighted circumplex centres (Russell 1980), or the network's own
        # VA head when the edge sent one (it saw the pixels; the prior did not).
        if va is not None:
            valence, arousal = float(va[0]), float(va[1])
        else:
            centres = np.array([VA_PRIOR.get(label, (0.0, 0.0)) for label in labels])
            valence, arousal = (p[:, None] * centres).sum(axis=0).tolist()
        aus: dict[str, float] = {}
        for idx in order[:2]:
            label, weight = labels[int(idx)], float(p[idx])
            for au in AU_PROTOTYPES.get(label, ()):
                aus[au] = max(aus.get(au, 0.0), round(_AU_FULL * weight, 2))
        aus = {au: i for au, i in aus.items() if i >= 0.1}
        second = labels[int(order[1])] if len(order) > 1 else top
        protos = "+".join(AU_PROTOTYPES.get(top, ())) or "no AUs"
        v0, a0 = VA_PRIOR.get(top, (0.0, 0.0))
        rationale = (
            f"network p({top})={p[order[0]]:.2f}, next {second} {p[order[1]] if len(order) > 1 else 0:.2f}; "
            f"{top} prior: valence {v0:+.2f}, arousal {a0:+.2f} "
            f"(Russell 1980), AUs {protos} (EMFACS)"
        )
        return Answer(top, _clip(valence), _clip(arousal), tuple(aus.items()), rationale)


def _clip(x: float) -> float:
    return float(min(1.0, max(-1.0, round(x, 3))))
