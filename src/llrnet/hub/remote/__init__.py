"""Modules that are not on disk yet: handles and URLs, their download and their cache.
More: docs/hub.md, "llrnet.hub.remote"."""
