"""What a method is, and the plumbing every method shares.

A method is an ``nn.Module`` that owns its networks (student; teacher, frozen models and
discriminators where it has them) and their optimizers, and does one training iteration in
``train_step(source, target, it) -> losses``. The trainer knows nothing method-specific: it builds
the method, moves it to the device, wraps the trainable networks for DDP (``ddp_modules``), sets
the learning rates of iteration ``it`` and calls ``train_step``; it saves ``checkpoint_state()``
and evaluates ``eval_network()``.

Inside ``train_step`` a method calls, in plain sight:

* ``self.net("student")`` — the DDP-wrapped student under torchrun, the student otherwise;
* ``with self.autocast():`` around forward passes (bf16/fp16 when configured);
* ``self.backward(loss)`` — scaled backward (fp16) or plain backward;
* ``with self.grad_sync(False):`` around the forward **and** backward of every pass but the last
  of an iteration, so that DDP all-reduces the accumulated gradients once (DDP decides during
  the forward whether the next backward synchronises, so the forward must be inside);
* ``self.step("main")`` — unscale (fp16), clip (``schedule.grad_clip``), step, zero the grads.

Batches are dicts of tensors on the device: ``img`` uint8 [B,3,H,W], ``label`` int64 [B,H,W]
(255 = ignore) where the stream has labels, and whatever else the dataset provides (``depth``).
Losses are returned as detached scalar tensors named ``loss_<term>``; the trainer checks them for
NaN/inf and logs them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from udaseg.data.catalog import LabelSpace
from udaseg.models.schedule import ScheduledOptimizer, build_optimizer
from udaseg.models.segmentor import EncoderDecoder


@dataclass
class MethodConfig:
    name: str = ""
    # Name of this variant in reports (e.g. "source_only+aug"); defaults to ``name``.
    label: str = ""
    # Cross-entropy normalisation: "all" divides by every pixel including ignored ones (mmseg
    # 0.16, what the DAFormer line trains with); "valid" divides by non-ignored pixels only.
    loss_norm: str = "all"


@dataclass
class MethodContext:
    """What a method needs to know about the run, besides its own config."""

    model_cfg: Any  # the resolved ``model`` group
    schedule: Any  # the resolved ``schedule`` group
    iters: int  # the LR schedule's horizon (schedule.horizon, else the run's iters)
    label_space: LabelSpace
    device: torch.device
    precision: str = "fp32"  # fp32 | bf16 | fp16
    # The run's ``inputs`` (name → tensors or a state dict), loaded by the trainer from files an
    # earlier stage wrote (class centroids, a frozen translator): methods never open files.
    inputs: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.label_space.num_classes


class Method(nn.Module):
    Config: ClassVar[type] = MethodConfig
    # Which benchmark stream carries the labels of the supervised loss: "source" for UDA,
    # "target" for the oracle (trained on the target's training labels).
    labelled_stream: ClassVar[str] = "source"
    # Whether train_step needs unlabelled target batches (``reads_target`` decides per config).
    uses_target: ClassVar[bool] = True
    # Trainable networks that DDP wraps (teachers and frozen models never are).
    ddp_modules: ClassVar[tuple[str, ...]] = ("student",)
    # Which network ``eval_network()`` returns, as recorded in eval.json.
    eval_network_name: ClassVar[str] = "student"
    student: EncoderDecoder  # the segmentation network a method trains (built by the subclass)

    @classmethod
    def reads_target(cls, cfg: Any) -> bool:
        """Whether a run of this method with method config ``cfg`` reads target batches."""
        return cls.uses_target

    def __init__(self, cfg: Any, ctx: MethodContext):
        super().__init__()
        if cfg.loss_norm not in ("all", "valid"):
            raise ValueError(f"method.loss_norm must be 'all' or 'valid', got {cfg.loss_norm!r}")
        self.cfg = cfg
        self.ctx = ctx
        self.optimizers: dict[str, ScheduledOptimizer] = {}
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=ctx.precision == "fp16")
        self._ddp: dict[str, DistributedDataParallel] = {}

    # -- the algorithm ---------------------------------------------------------------------
    def train_step(self, source: dict, target: dict | None, it: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def eval_network(self) -> nn.Module | None:
        """The network that is evaluated and exported: the student (DAFormer #23); None for a
        method that trains no segmentation network (no evaluation then)."""
        return self.student

    # -- helpers for train_step ------------------------------------------------------------
    def build_student_optimizer(self, module: nn.Module | None = None) -> ScheduledOptimizer:
        """The main optimizer over the student with the schedule's parameter groups
        (head lr ×``head_lr_mult``, no weight decay on norms)."""
        from udaseg.models import param_groups

        s = self.ctx.schedule
        groups = param_groups(module if module is not None else self.student, base_lr=s.lr,
                              weight_decay=s.weight_decay, head_lr_mult=s.head_lr_mult,
                              no_decay_norm=s.no_decay_norm)
        return build_optimizer(groups, s, self.ctx.iters)

    def net(self, name: str = "student") -> nn.Module:
        return self._ddp.get(name) or getattr(self, name)

    def autocast(self):
        if self.ctx.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.ctx.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.ctx.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    @contextlib.contextmanager
    def grad_sync(self, enabled: bool = True):
        """``grad_sync(False)``: the DDP wrappers' ``no_sync()`` — wrap the forward and backward
        of a pass whose gradients are only accumulated; the last pass of the iteration runs
        outside it and all-reduces everything once. A no-op without DDP."""
        with contextlib.ExitStack() as stack:
            if not enabled:
                for wrapper in self._ddp.values():
                    stack.enter_context(wrapper.no_sync())
            yield

    def step(self, name: str = "main") -> None:
        opt = self.optimizers[name]
        clip = getattr(self.ctx.schedule, "grad_clip", None)
        if clip:
            self.scaler.unscale_(opt.optimizer)
            params = [p for g in opt.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(opt.optimizer)
        self.scaler.update()
        opt.zero_grad()

    # -- trainer hooks ---------------------------------------------------------------------
    def set_iteration(self, it: int) -> None:
        for opt in self.optimizers.values():
            opt.set_iteration(it)

    @property
    def lr(self) -> float:
        first = next(iter(self.optimizers.values()), None)
        return first.lr if first is not None else 0.0

    def setup_distributed(self, device_ids: list[int] | None, find_unused_parameters: bool = False) -> None:
        for name in self.ddp_modules:
            module = getattr(self, name, None)  # None: a network this configuration does not build
            if module is not None and any(p.requires_grad for p in module.parameters()):
                self._ddp[name] = DistributedDataParallel(module, device_ids=device_ids,
                                                          find_unused_parameters=find_unused_parameters)

    def checkpoint_state(self) -> dict:
        return {
            "modules": self.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "scaler": self.scaler.state_dict(),
            "extra": self.extra_state(),
        }

    def load_checkpoint_state(self, state: dict) -> None:
        from udaseg.models import load_state_dict_strict

        load_state_dict_strict(self, state["modules"], source="checkpoint")
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        self.scaler.load_state_dict(state["scaler"])
        self.load_extra_state(state.get("extra", {}))

    # -- diagnostics (plots only; never a loss) ---------------------------------------------
    def observe_target_labels(self, label: torch.Tensor) -> None:
        """Called by the trainer *after* ``train_step`` with the target batch's labels when
        ``diagnostics`` is on and the target split has labels: a method may compare its
        pseudo-labels with them for the logs. Labels never reach ``train_step``."""

    def diagnostics_row(self) -> dict:
        """Extra entries of the next ``metrics.jsonl`` row (and reset what was accumulated)."""
        return {}

    def extra_state(self) -> dict:
        """Non-tensor state a method keeps between iterations (counters, queues)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass
