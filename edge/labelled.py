"""Labelled image sets for ``emostream eval``: a re-export of :mod:`emostream.datasets`.

The reader moved there so that training can use it without importing the edge (``make lint``);
this name stays for existing callers.
"""

from __future__ import annotations

from emostream.datasets import (
    IMAGE_SUFFIXES,
    DatasetError,
    LabelledImages,
    load_labelled_images,
    read_labels_csv,
)

__all__ = ["IMAGE_SUFFIXES", "DatasetError", "LabelledImages", "load_labelled_images", "read_labels_csv"]
