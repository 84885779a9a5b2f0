"""The bottom layer: helpers that know no domain (errors, the registry primitive,
seeding, files and output paths, devices and process groups, HTTP, plain-data
coercion, argument checks). Everything in llrnet may import these; they import
nothing of llrnet's above ``llrnet.core``. See docs/design.md for the layer table."""
