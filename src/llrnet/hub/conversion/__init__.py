"""Recognized modules into llrnet models: fill, prove complete, compare with TensorFlow.

The top layer of :mod:`llrnet.hub`, above :mod:`llrnet.hub.recognition`:
``convert`` builds the architecture and fills it from the mapping the
architecture gives, ``verify`` compares it with TensorFlow through the
``tf_worker`` script, which runs in a separate interpreter.
"""
