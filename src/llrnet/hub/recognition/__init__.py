"""What network a module's graph computes, recognized from op types and dataflow.
More: docs/hub.md, "llrnet.hub.recognition"."""
