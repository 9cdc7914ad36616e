"""Run by ``torchrun`` from test_distributed.py: a Method with a DDP-wrapped student does one
pass inside ``grad_sync(False)`` and one outside; saves each rank's gradients after each pass.
Not a test module itself."""

import gc
import sys
from pathlib import Path

import torch
from torch import nn

from udaseg import dist
from udaseg.data.catalog import get_label_space
from udaseg.methods.base import Method, MethodConfig, MethodContext


class TwoPass(Method):
    def __init__(self):
        ctx = MethodContext(model_cfg=None, schedule=None, iters=1, label_space=get_label_space("cityscapes19"),
                            device=torch.device("cpu"))
        super().__init__(MethodConfig(name="two_pass"), ctx)
        torch.manual_seed(0)  # the same initial weights on every rank
        self.student = nn.Linear(3, 2)


def main(out_dir: str) -> None:
    torch.distributed.init_process_group("gloo")
    try:
        method = TwoPass()
        method.setup_distributed(None)
        x = torch.full((4, 3), float(dist.rank() + 1))  # different data per rank
        with method.grad_sync(False):
            method.backward(method.net("student")(x).sum())
        local = method.student.weight.grad.clone()
        method.backward(method.net("student")(2 * x).sum())
        synced = method.student.weight.grad.clone()
        torch.save({"local": local, "synced": synced}, Path(out_dir) / f"grads{dist.rank()}.pt")
        # Release the DDP wrapper (its reducer holds the process group) before gloo goes: with it
        # still alive at destroy_process_group, a loaded CI machine aborted twice at exit with
        # 'terminate called without an active exception' (rank 0 once, rank 1 once).
        del method
        gc.collect()
        torch.distributed.barrier()  # no rank tears gloo down while its peer is still finishing
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
