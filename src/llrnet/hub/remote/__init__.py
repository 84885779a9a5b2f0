"""Modules that are not on disk yet: handles and URLs, their download and their cache.

* :mod:`~llrnet.hub.remote.sources`: what a source string names (a folder, an
  archive, a tfhub.dev handle, a tfhub.dev or Kaggle Models URL, a direct
  archive URL) and the URL it is fetched from.
* :mod:`~llrnet.hub.remote.download`: one archive streamed to a file with
  timeouts, retries and a progress bar, checked to be a gzip tar.
* :mod:`~llrnet.hub.remote.cache`: tensorflow_hub's cache layout
  (``<root>/<sha1 of the handle URL>``), filled atomically.

Beside :mod:`llrnet.hub.formats` (whose archive extraction it uses) and below
the importer; it never imports recognition or conversion, nor torch.
"""
