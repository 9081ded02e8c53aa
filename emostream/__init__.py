"""emostream: real-time facial-emotion analysis for the edge.

The repository keeps one folder per layer (``streams/``, ``edge/``, ``engines/``, ``calibration/``,
``reasoner/``, ``training/``); the build maps each into this namespace (``emostream.edge``, …) so that
installing emostream never claims generic top-level names such as ``training`` or ``engines``.
"""

__version__ = "0.1.0"
