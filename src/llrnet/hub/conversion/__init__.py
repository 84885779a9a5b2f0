"""Recognized modules into llrnet models: fill, prove complete, compare with TensorFlow.
More: docs/hub.md, "llrnet.hub.conversion"."""
