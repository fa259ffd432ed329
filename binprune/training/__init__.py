"""Adversarial training: the config (:class:`binprune.config.TrainConfig`), the loop
(:mod:`.trainer`), the schedule, multi-process setup and training curves.

One loop serves binprune and every method: it trains whatever parameters require gradients, so
for a supermask model that is the scores only, and for a dense model the weights.
"""

from ..config import TrainConfig
from ..results import TrainResult
from .api import resolve_train_config, train
from .curves import curves_figure
from .distributed import dist_info, init_distributed_from_env
from .hooks import SparsityScheduleHook
from .runfolder import RunFolder, RunFolderError
from .schedule import learning_rate
from .trainer import StepHook, Trainer, TrainingDiverged

__all__ = ["TrainConfig", "TrainResult", "StepHook", "Trainer", "train", "resolve_train_config", "learning_rate",
           "init_distributed_from_env", "dist_info", "curves_figure", "SparsityScheduleHook", "RunFolder",
           "RunFolderError", "TrainingDiverged"]
