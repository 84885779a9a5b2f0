"""The file formats of a TF1 Hub module, read (and written) without TensorFlow.
More: docs/hub.md, "llrnet.hub.formats"."""
