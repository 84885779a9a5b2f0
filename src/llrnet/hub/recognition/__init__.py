"""What network a module's graph computes, recognized from op types and dataflow.

The middle layer of :mod:`llrnet.hub`, above :mod:`llrnet.hub.formats`:
``graph`` turns the inference graph into layers; ``structure`` finds the
residual trunk, reads the architecture options and describes the trunk in the
plain-data vocabulary of :mod:`llrnet.models.layout`; ``analyze`` puts both
together for one module.
"""
