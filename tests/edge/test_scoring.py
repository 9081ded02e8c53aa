import numpy as np
import pytest

from emostream.edge.scoring import score


def test_perfect_and_confused_predictions():
    labels = ("anger", "happy", "sad")
    s = score(["anger", "happy", "happy", "sad"], ["anger", "happy", "sad", "sad"], labels)
    assert s.accuracy == pytest.approx(0.75)
    assert s.recall() == {"anger": 1.0, "happy": 0.5, "sad": 1.0}
    # F1: anger 1, happy 2*1/(2+1)=0.667, sad 2*1/(1+2)=0.667
    assert s.macro_f1 == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert s.confusion[1, 2] == 1


def test_label_the_model_lacks_is_reported_and_counted_wrong():
    s = score(["contempt", "happy"], ["happy", "happy"], ("anger", "happy"))
    assert s.missing_from_model == ("contempt",)
    assert s.accuracy == 0.5
    assert "contempt" in s.classes and s.recall()["contempt"] == 0.0


def test_non_label_prediction_such_as_no_face_gets_a_column():
    s = score(["happy", "sad"], ["(no face)", "sad"], ("happy", "sad"))
    assert s.n == 2 and s.accuracy == 0.5
    assert int(np.sum(s.confusion[:, s.classes.index("(no face)")])) == 1
