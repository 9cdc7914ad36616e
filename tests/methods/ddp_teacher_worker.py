"""Run by torchrun from the method tests: train a method for a few iterations under DDP (gloo) and
save each rank's method state (and, where there is one, its teacher and student parameters
apart). Not a test module itself."""

import json
import sys
from pathlib import Path

import torch

from udaseg import config as config_lib
from udaseg import dist
from udaseg.engine import trainer


def main(out_dir: str, args: str) -> None:
    cfg = config_lib.compose(json.loads(args) + ["device=cpu"])
    captured = {}
    original = trainer.evaluate_all

    def capture(method, *a, **kw):  # the final evaluation sees the trained method on every rank
        captured["method"] = method
        return original(method, *a, **kw)

    trainer.evaluate_all = capture
    trainer.train(cfg, Path(out_dir) / "run", progress=False)
    method = captured["method"]
    rank = dist.rank()
    torch.save(method.state_dict(), Path(out_dir) / f"method{rank}.pt")
    if hasattr(method, "teacher"):
        torch.save(method.teacher.model.state_dict(), Path(out_dir) / f"teacher{rank}.pt")
    torch.save(method.student.state_dict(), Path(out_dir) / f"student{rank}.pt")
    dist.destroy()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
