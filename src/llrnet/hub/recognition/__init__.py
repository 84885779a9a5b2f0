"""What network a module's graph computes, recognized from op types and dataflow.

The middle layer of :mod:`llrnet.hub`, above :mod:`llrnet.hub.formats`:
``graph`` turns the inference graph into layers, ``structure`` finds the
residual trunk and reads the architecture options, ``analyze`` puts both
together for one module and describes it in the vocabulary of
:mod:`llrnet.models.layout`.
"""
