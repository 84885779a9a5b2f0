"""Training: tasks (standard, PGD, TRADES, LLR), the LLR regularizer, the loop.
More: docs/training.md, "llrnet.train"."""

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
