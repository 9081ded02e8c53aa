"""SEKE cross-grain rules: coherent answers pass, contradictory ones fail, majority picks well."""

from __future__ import annotations

from emostream.reasoner.knowledge import AU_PROTOTYPES, VA_PRIOR, KnowledgeEngine
from emostream.reasoner.schema import Answer
from emostream.reasoner.verify import au_expression, check, choose

LABELS = list(VA_PRIOR)


def proto_answer(label: str, intensity: float = 0.8) -> Answer:
    v, a = VA_PRIOR[label]
    return Answer(label, v, a, tuple((au, intensity) for au in AU_PROTOTYPES[label]), "")


def test_every_prototype_is_consistent_with_itself():
    for label in LABELS:
        c = check(proto_answer(label))
        assert c.ok, (label, c)
        if AU_PROTOTYPES[label]:
            assert au_expression(set(AU_PROTOTYPES[label])) == label


def test_contradictions_fail_the_right_rule():
    # "happy" with negative valence: expression vs VA fails (Russell 1980).
    c = check(Answer("happy", -0.7, 0.3, (("AU6", 0.8), ("AU12", 0.8)), ""))
    assert not c.va and c.au and not c.au_va
    # "sad" with a Duchenne smile: expression vs AUs fails (EMFACS).
    c = check(Answer("sad", -0.6, -0.3, (("AU6", 0.8), ("AU12", 0.8)), ""))
    assert c.va and not c.au and not c.au_va
    # neutral with strong brow lowering
    assert not check(Answer("neutral", 0.0, 0.0, (("AU4", 0.9),), "")).au
    # weak AUs count as absent: neutral with a trace of AU12 is fine
    assert check(Answer("neutral", 0.1, 0.0, (("AU12", 0.1),), "")).ok


def test_choose_prefers_the_consistent_majority():
    bad_happy = Answer("happy", -0.8, 0.5, (("AU4", 0.8),), "")
    samples = [bad_happy, bad_happy, proto_answer("anger"), proto_answer("anger"), None]
    v = choose(samples)
    assert v.answer.expression == "anger" and v.verified
    assert v.samples == 5 and v.invalid == 1 and v.agreement == 0.5
    # all inconsistent: majority of all valid samples, verified False
    v = choose([bad_happy, bad_happy, Answer("sad", 0.9, 0.9, (), "")])
    assert v.answer.expression == "happy" and not v.verified and abs(v.agreement - 2 / 3) < 1e-9
    assert choose([None, None]) is None


def test_knowledge_engine_follows_the_network_and_says_why():
    engine = KnowledgeEngine()
    probs = [0.02, 0.9, 0.02, 0.02, 0.01, 0.01, 0.01, 0.01]
    a = engine.answer(LABELS, probs)
    assert a.expression == "happy" and a.valence > 0.4 and {"AU6", "AU12"} <= dict(a.aus).keys()
    assert check(a).ok and "Russell" in a.rationale and "EMFACS" in a.rationale
    sad = engine.answer(LABELS, [0.05, 0.0, 0.8, 0.0, 0.05, 0.05, 0.05, 0.0])
    assert sad.expression == "sad" and sad.valence < 0 and "AU15" in dict(sad.aus)
    # the network's own VA head wins over the prior when it is sent
    assert engine.answer(LABELS, probs, va=[0.1, -0.2]).valence == 0.1
    # a 7-class model without contempt
    assert engine.answer(LABELS[:7], probs[:7]).expression == "happy"
