"""Loaders on real FER2013 files: canonical names, exact counts, no val leakage, clear errors for bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from emostream.edge.cli import main as cli_main
from emostream.training.data import FER7_LABELS, DatasetError, load_fer_cached, load_fer_split, load_labels_csv

# From ../shared/data/README.md (FER2013 PublicTest), keyed by canonical name.
VAL_COUNTS = {"anger": 467, "disgust": 56, "fear": 496, "happy": 895, "neutral": 607, "sad": 653, "surprise": 415}


def test_fer_val_split_maps_names_and_counts(data_file):
    ds = load_fer_split(data_file("fer2013"), "val")
    assert ds.names == FER7_LABELS and "angry" not in ds.names
    assert ds.counts() == VAL_COUNTS
    assert ds.images.shape == (3589, 48, 48) and ds.images.dtype == np.uint8
    # The folder a file came from is the label it got.
    for f, y in zip(ds.files[::97], ds.labels[::97]):
        folder = Path(f).parts[1]
        assert ds.names[y] == ("anger" if folder == "angry" else folder)


def test_cache_round_trip_and_no_val_leakage(data_file, tmp_path):
    root = data_file("fer2013")
    val = load_fer_cached(root, "val", cache_dir=tmp_path)
    again = load_fer_cached(root, "val", cache_dir=tmp_path)  # served from the .npz
    assert (tmp_path / "fer2013_val.npz").is_file()
    assert np.array_equal(val.images, again.images) and np.array_equal(val.labels, again.labels)
    train_files = sorted(str(p.relative_to(root)) for p in (root / "train").rglob("*.jpg"))
    assert len(train_files) == 28709
    assert all(f.startswith("train/") for f in train_files)
    assert not set(train_files) & set(val.files)
    assert all(f.startswith("val/") for f in val.files)


def _folder_with_csv(tmp_path: Path, fer: Path, rows: list[str]) -> Path:
    folder = tmp_path / "faces"
    (folder / "img").mkdir(parents=True)
    for src in sorted((fer / "val" / "angry").glob("*.jpg"))[:3] + sorted((fer / "val" / "happy").glob("*.jpg"))[:2]:
        shutil.copy(src, folder / "img" / src.name)
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_labels_csv_loader_maps_to_canonical(data_file, tmp_path):
    fer = data_file("fer2013")
    names = [p.name for p in sorted((fer / "val" / "angry").glob("*.jpg"))[:3]]
    happy = [p.name for p in sorted((fer / "val" / "happy").glob("*.jpg"))[:2]]
    rows = ["file,label"] + [f"img/{n},angry" for n in names] + [f"img/{n},Happiness" for n in happy]
    ds = load_labels_csv(_folder_with_csv(tmp_path, fer, rows))
    assert len(ds) == 5
    assert ds.counts()["anger"] == 3 and ds.counts()["happy"] == 2
    assert ds.images.shape == (5, 48, 48)


@pytest.mark.parametrize(
    ("row", "message"),
    [("img/{a},grumpy", "unknown emotion label 'grumpy'"),
     ("img/missing.jpg,happy", "not found"),
     ("img/{a},", "empty file or label"),
     ("img/{a},contempt", "not one of the model's labels")],
)
def test_bad_labels_csv_rows_name_the_line(data_file, tmp_path, row, message):
    fer = data_file("fer2013")
    a = sorted((fer / "val" / "angry").glob("*.jpg"))[0].name
    folder = _folder_with_csv(tmp_path, fer, ["file,label", f"img/{a},angry", row.format(a=a)])
    with pytest.raises(DatasetError, match=message) as err:
        load_labels_csv(folder)
    assert "labels.csv:3" in str(err.value)


def test_labels_csv_missing_pieces(tmp_path):
    with pytest.raises(DatasetError, match="image folder not found"):
        load_labels_csv(tmp_path / "nope")
    with pytest.raises(DatasetError, match="labels.csv not found"):
        load_labels_csv(tmp_path)
    (tmp_path / "labels.csv").write_text("path,emotion\nx.jpg,happy\n")
    with pytest.raises(DatasetError, match="columns file,label"):
        load_labels_csv(tmp_path)


def test_cli_reports_missing_data_as_one_line(tmp_path, capsys):
    rc = cli_main(["distill", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"),
                   "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("emostream: error: FER2013 split folder not found")


def test_cli_reports_bad_checkpoint_as_one_line(tmp_path, capsys):
    bogus = tmp_path / "best.pt"
    bogus.write_bytes(b"not a checkpoint")
    rc = cli_main(["calibrate", str(bogus), "--models-dir", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot read checkpoint" in err[0]
