"""Run a TF1 Hub module in TensorFlow; executed by :mod:`llrnet.hub.conversion.verify`.
More: docs/hub.md, "llrnet.hub.conversion.tf_worker"."""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np  # deferred: the worker runs by path, in TF's own environment
    import tensorflow as tf  # deferred: optional (tensorflow), in TF's own environment

    module_dir, inputs_path, outputs_path = argv
    with np.load(inputs_path, allow_pickle=False) as data:
        feeds = {key: data[key] for key in data.files}
    v1 = tf.compat.v1
    graph = tf.Graph()
    with v1.Session(graph=graph) as session:
        meta = v1.saved_model.loader.load(session, [], module_dir)
        signature = meta.signature_def["default"]
        feed = {graph.get_tensor_by_name(signature.inputs[k].name): v for k, v in feeds.items()}
        fetch = {k: graph.get_tensor_by_name(v.name) for k, v in signature.outputs.items()}
        outputs = session.run(fetch, feed)
    arrays = {str(k): np.asarray(v) for k, v in outputs.items()}
    np.savez(outputs_path, **arrays)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
