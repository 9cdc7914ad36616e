"""Run by ``torchrun`` from test_evaluator.py: evaluate the fake model on the fake dataset on every
rank and save what rank sees after the all-reduce. Not a test module itself."""

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import torch

spec = importlib.util.spec_from_file_location("engine_test_fakes", Path(__file__).with_name("conftest.py"))
fakes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fakes)

from udaseg import dist  # noqa: E402
from udaseg.engine.evaluator import evaluate  # noqa: E402


class RecordingDataset(fakes.FakeSegDataset):
    """Remembers which items this rank read."""

    def __init__(self, n: int):
        super().__init__(n=n)
        self.seen: list[int] = []

    def __getitem__(self, i: int) -> dict:
        self.seen.append(i)
        return super().__getitem__(i)


def main(out_dir: str, n: int) -> None:
    torch.distributed.init_process_group("gloo")
    try:
        dataset = RecordingDataset(n)
        result = evaluate(fakes.LookupModel(shift=3), dataset, progress=False)
        rank = dist.rank()
        np.save(os.path.join(out_dir, f"conf{rank}.npy"), result.confusion)
        summary = [result.num_images, dist.world_size(), *dataset.seen]
        Path(out_dir, f"rank{rank}.txt").write_text(" ".join(map(str, summary)))
        torch.distributed.barrier()  # no rank tears gloo down while its peer is still finishing
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
