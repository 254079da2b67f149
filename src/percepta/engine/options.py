"""Option dataclasses of the training engine (the defaults of the ``train:`` config section)."""

from __future__ import annotations

from dataclasses import dataclass, field

from percepta.losses.balance import LossBalanceConfig


@dataclass
class OptimizerConfig:
    """``train.optimizer``: ``adamw`` or ``sgd`` (torch.optim)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw only
    no_decay_norm_and_bias: bool = True  # no weight decay on norm layers and biases


@dataclass
class SchedulerConfig:
    """``train.scheduler``: ``constant``, ``step`` (milestones x gamma) or ``cosine``.

    A linear warm-up from ``warmup_factor * lr`` to ``lr`` over ``warmup_iters`` iterations is
    applied on top of any of them.
    """

    name: str = "cosine"
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    milestones: list[int] = field(default_factory=list)  # step only, in iterations
    gamma: float = 0.1  # step only
    min_lr_factor: float = 0.0  # cosine only: final lr = min_lr_factor * lr


@dataclass
class TrainConfig:
    """``train``: the loop, precision, schedule, checkpoints and logging."""

    max_iters: int = 1000
    batch_size: int = 8  # global batch: split evenly over the processes of a distributed run
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = False
    amp_dtype: str = "auto"  # auto (bf16 on CPU, fp16 on CUDA) | bf16 | fp16
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    ema: bool = False
    ema_decay: float = 0.999
    log_period: int = 20
    eval_period: int = 0  # 0 = evaluate only at the end
    checkpoint_period: int = 500  # 0 = only at the end
    max_nonfinite: int = 5  # stop after this many non-finite losses in a row
    deterministic: bool = False  # torch.use_deterministic_algorithms + no cudnn benchmark
    find_unused_parameters: bool = False  # DDP: allow parameters that get no gradient in a step
    sync_bn: bool = False  # DDP: BatchNorm statistics over the global batch (as one process)
    max_skip_fraction: float = 0.05  # unreadable samples skipped (warned) up to this share
    progress: bool = True  # console progress bar
    tensorboard: bool = True
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    loss_balance: LossBalanceConfig = field(default_factory=LossBalanceConfig)
