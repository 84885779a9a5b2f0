"""The file formats of a TF1 Hub module, read (and written) without TensorFlow.

The lowest layer of :mod:`llrnet.hub`: it imports nothing of llrnet but
:mod:`llrnet.core.errors`. Protobuf wire format (``protowire``), CRC32C
(``crc32c``), LevelDB tables (``table``), tensor bundles (``bundle``,
``bundle_writer``, ``dtypes``, ``ordered_code``), ``saved_model.pb``
(``savedmodel``), and the module folder or archive that holds them
(``archive``, ``module``).
"""
