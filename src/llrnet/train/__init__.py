"""Training: tasks (standard, PGD, TRADES, LLR), the LLR regularizer, the loop.

Modules: ``config`` (the schema), ``presets`` (YAML, ``extends``, overrides),
``run_dir`` (a run's files), ``loop`` (:func:`train`), ``tasks`` (``TASKS``),
``data`` (``DATASETS``, the batch order), ``setup``, ``optim``, ``checkpoint``,
``ema``, ``logging``, ``augment``, ``evaluation``, ``llr``, ``bn_replay``.

Example::

    from llrnet.train import load_config, train

    config = load_config("digits_llr", overrides=["steps=200"])
    result = train(config, "runs/digits_llr")
    result.weights, result.metrics          # final.safetensors, clean/PGD accuracy
"""

from llrnet.train.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    TaskConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
)
from llrnet.train.data import DATASETS
from llrnet.train.llr import LLROptions, llr_regularizer
from llrnet.train.loop import TrainResult, train
from llrnet.train.presets import dump_config, list_presets, load_config
from llrnet.train.run_dir import RunDir, load_run_config
from llrnet.train.tasks import TASKS, LLRTask, PGDTask, StandardTask, TRADESTask

__all__ = [
    "DATASETS",
    "TASKS",
    "DataConfig",
    "EvalConfig",
    "LLROptions",
    "LLRTask",
    "ModelConfig",
    "OptimConfig",
    "PGDTask",
    "RunDir",
    "StandardTask",
    "TRADESTask",
    "TaskConfig",
    "TrainConfig",
    "TrainResult",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "list_presets",
    "llr_regularizer",
    "load_config",
    "load_run_config",
    "train",
]
