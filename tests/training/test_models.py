"""Net2WiderNet: the shipped student's weights, widened, compute the same function on real faces."""

from __future__ import annotations

import pytest
import torch

from emostream.training.data import load_fer_split
from emostream.training.loop import normalize
from emostream.training.models import CheckpointError, build_model, load_checkpoint, widen_state


def test_widened_student_gives_the_same_answers_on_real_faces(data_file):
    """A `student` network (random weights, random BN statistics: function preservation needs no training)
    widened into `student_l` answers 300 real val faces exactly as before."""
    val = load_fer_split(data_file("fer2013"), "val")
    x = normalize(val.images[::12], 0.5, 4.0)  # 300 real faces of every class
    torch.manual_seed(0)
    narrow = build_model("student").eval()
    with torch.no_grad():
        for m in narrow.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    state = narrow.state_dict()
    wide = build_model("student_l").eval()
    wide.load_state_dict(widen_state(state, "student", "student_l"))
    assert sum(p.numel() for p in wide.parameters()) > 1.5 * sum(p.numel() for p in narrow.parameters())
    with torch.no_grad():
        a, b = narrow(x), wide(x)
    assert torch.equal(a.argmax(1), b.argmax(1))
    assert (a - b).abs().max() < 1e-3 * max(1.0, float(a.abs().max()))
    # The copies are not identical (symmetry broken), and another seed gives another network.
    other = widen_state(state, "student", "student_l", seed=1)
    assert not torch.equal(other["head.weight"], widen_state(state, "student", "student_l")["head.weight"])
    # The shipped weights are a student_l already: a checkpoint of the same arch needs no widening.
    assert load_checkpoint("student")["arch"] == "student_l"


@pytest.mark.parametrize(("src", "dst"), [("student_l", "student"), ("student", "teacher_s"),
                                          ("student", "resnet50")])
def test_widening_refuses_what_is_not_a_widening(src, dst):
    state = build_model(src).state_dict()
    with pytest.raises(CheckpointError, match="cannot widen"):
        widen_state(state, src, dst)
