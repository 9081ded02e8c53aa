from pathlib import Path

import pytest

from emostream.edge.labelled import DatasetError, load_labelled_images


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded here")


def test_labels_csv_maps_names_to_canonical(tmp_path):
    _img(tmp_path / "a.jpg")
    _img(tmp_path / "sub" / "b.jpg")
    (tmp_path / "labels.csv").write_text("file,label\na.jpg,angry\nsub/b.jpg,Happiness\n")
    data = load_labelled_images(tmp_path)
    assert data.labels == ("anger", "happy")
    assert data.files[1] == tmp_path / "sub" / "b.jpg"


def test_fer2013_layout_reads_the_csv_beside_the_folder(shared_data):
    data = load_labelled_images(shared_data / "fer2013" / "val")
    assert len(data) == 3589
    assert data.labels.count("anger") == 467 and "angry" not in data.labels
    assert all(f.is_file() for f in data.files[:50])


def test_subfolder_layout(tmp_path):
    _img(tmp_path / "sad" / "x.png")
    _img(tmp_path / "surprise" / "y.jpg")
    _img(tmp_path / "notes" / "z.jpg")  # not a label folder: ignored
    data = load_labelled_images(tmp_path)
    assert sorted(data.labels) == ["sad", "surprise"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("file,emotion\na.jpg,happy\n", "columns file,label"),
        ("file,label\na.jpg,bored\n", "unknown emotion label 'bored'"),
        ("file,label\nmissing.jpg,happy\n", "labels.csv:2: image 'missing.jpg' not found"),
        ("file,label\n", "lists no images"),
    ],
)
def test_bad_label_files_give_one_clear_error(tmp_path, content, message):
    _img(tmp_path / "a.jpg")
    (tmp_path / "labels.csv").write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_labelled_images(tmp_path)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        load_labelled_images(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no labels.csv"):
        load_labelled_images(tmp_path)
