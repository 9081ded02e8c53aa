"""The FER2013 pack (`emostream pack-fer`, `--data FILE.npz`) and `--device`, on a sample of real FER2013 faces.

The pack is what a GPU machine trains from (it gets only the working tree plus 64 MiB of carried files), so it
must give exactly the folder loader's arrays, keep train and val apart, and refuse a damaged file in one line.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from emostream.datasets import DatasetError
from emostream.edge.cli import main as cli_main
from emostream.training.data import (
    FaceDataset,
    load_fer_data,
    load_fer_pack,
    load_fer_split,
    pack_fer,
    write_pack,
)
from emostream.training.loop import TrainingError, bf16_native, resolve_device
from emostream.training.models import load_checkpoint, load_checkpoint_model


@pytest.fixture(scope="module")
def pack(fer_sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pack") / "fer.npz"
    size, counts = pack_fer(fer_sample, out, cache_dir=out.parent / "cache")
    assert size == out.stat().st_size and counts == {"train": 12 * 7, "val": 6 * 7}
    return out


def test_pack_round_trip_equals_the_folder_loader(fer_sample, pack):
    for split in ("train", "val"):
        folder = load_fer_split(fer_sample, split)
        packed = load_fer_pack(pack, split)
        assert packed.images.dtype == np.uint8 and packed.images.shape == folder.images.shape
        assert np.array_equal(packed.images, folder.images)
        assert np.array_equal(packed.labels, folder.labels) and packed.labels.dtype == np.int64
        assert packed.names == folder.names
        via_data = load_fer_data(pack, split)  # what `--data FILE.npz` calls
        assert np.array_equal(via_data.images, folder.images)
    # Train and val stay apart, each split in its own arrays (FER2013 itself has a few identical faces in both
    # splits, e.g. blank ones, so the split is a property of the arrays, not of pixel content).
    with zipfile.ZipFile(pack) as zf:  # really LZMA (deflate would not fit FER2013 into 64 MiB)
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_LZMA}
        assert sorted(zf.namelist()) == sorted(f"{k}.npy" for k in ("format", "train_images", "train_labels",
                                                                      "train_names", "val_images", "val_labels",
                                                                      "val_names"))


def _ds(names: tuple[str, ...], n: int = 4) -> FaceDataset:
    rng = np.random.default_rng(0)
    return FaceDataset(rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), np.arange(n, dtype=np.int64) % 7, names)


def test_bad_packs_are_one_clear_error(pack, tmp_path):
    names = load_fer_pack(pack, "val").names
    with pytest.raises(DatasetError, match="pack not found"):
        load_fer_pack(tmp_path / "none.npz", "train")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(pack.read_bytes()[:4000])
    with pytest.raises(DatasetError, match="cannot read pack"):
        load_fer_pack(corrupt, "train")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((2, 48, 48), np.uint8))
    with pytest.raises(DatasetError, match="not a FER2013 pack.*missing"):
        load_fer_pack(wrong, "train")
    mixed = tmp_path / "mixed.npz"
    write_pack({"train": _ds(names), "val": _ds(tuple(reversed(names)))}, mixed)
    for split in ("train", "val"):  # whichever split is read, the mismatch is found
        with pytest.raises(DatasetError, match="train and val label names differ"):
            load_fer_pack(mixed, split)
    big = tmp_path / "big.npz"
    with pytest.raises(DatasetError, match="over the 0 MiB"):
        write_pack({"train": _ds(names), "val": _ds(names)}, big, max_bytes=100)
    assert not big.exists() and not list(tmp_path.glob("big*"))


def test_cli_reports_a_corrupt_pack_in_one_line(pack, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip")
    assert cli_main(["train", "teacher", "--data", str(corrupt), "--device", "cpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emostream: error: cannot read pack") and "\n" not in err


def test_train_and_distill_one_epoch_from_a_pack(fer_sample, tmp_path, capsys):
    pack = tmp_path / "packed" / "fer.npz"
    assert cli_main(["pack-fer", str(fer_sample), "-o", str(pack), "--cache", str(tmp_path / "cache")]) == 0
    assert "MiB" in capsys.readouterr().out
    common = ["--data", str(pack), "--limit", "48", "--epochs", "1", "--batch-size", "16", "--threads", "1",
              "--device", "cpu", "--no-progress"]
    assert cli_main(["train", "teacher", "--arch", "student", *common, "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    precision = "bf16 autocast" if bf16_native() else "fp32"  # bf16 only where the CPU computes it natively
    assert f"on cpu ({precision})" in out and "peak lr 0.0125" in out  # 0.1 x 16/128: the linear scaling rule
    assert cli_main(["distill", *common, "--teacher", str(tmp_path / "t" / "best.pt"), "--init", "student",
                     "--out", str(tmp_path / "s")]) == 0
    for run in ("t", "s"):
        ckpt = load_checkpoint(tmp_path / run / "best.pt")
        assert ckpt["config"]["device"] == "cpu"
        assert all(v.device.type == "cpu" for v in ckpt["model"].values())
        load_checkpoint_model(tmp_path / run / "best.pt")
    assert load_checkpoint(tmp_path / "s" / "best.pt")["init"] == "student"


def test_device_cuda_without_cuda_is_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(TrainingError, match="CUDA is not available"):
            resolve_device(spec)
    for spec in ("gpu", "cuda:x"):
        with pytest.raises(TrainingError, match="expected auto, cpu, cuda or cuda:N"):
            resolve_device(spec)
    # Through the CLI: exit 2 and one line, before any data is read (the folder does not even exist).
    rc = cli_main(["distill", "--device", "cuda", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("emostream: error: --device cuda: CUDA is not available") and "\n" not in err
    assert not (tmp_path / "o").exists()
