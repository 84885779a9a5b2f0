"""Training: tasks (standard, PGD, TRADES, LLR), the LLR regularizer, the loop.

Example::

    from llrnet.train import load_config, train

    config = load_config("digits_llr", overrides=["steps=200"])
    result = train(config, "runs/digits_llr")
    result.weights, result.metrics          # final.safetensors, clean/PGD accuracy
"""

from llrnet.train.checkpoint import latest_checkpoint, save_checkpoint
from llrnet.train.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    TaskConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    list_presets,
    load_config,
)
from llrnet.train.ema import ModelEMA
from llrnet.train.llr import llr_regularizer
from llrnet.train.loop import TrainResult, load_run_config, train
from llrnet.train.optim import build_optimizer, build_scheduler, lr_factor
from llrnet.train.tasks import LLRTask, PGDTask, StandardTask, TRADESTask

__all__ = [
    "DataConfig",
    "EvalConfig",
    "LLRTask",
    "ModelConfig",
    "ModelEMA",
    "OptimConfig",
    "PGDTask",
    "StandardTask",
    "TRADESTask",
    "TaskConfig",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "build_scheduler",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "latest_checkpoint",
    "list_presets",
    "llr_regularizer",
    "load_config",
    "load_run_config",
    "lr_factor",
    "save_checkpoint",
    "train",
]
