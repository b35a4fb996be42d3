"""The training run's messages (console and log.txt) and TensorBoard scalars and images, from rank 0 only."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from tqdm import tqdm

from training.tensorboard import close_writer, guard_writer


def summary_writer_class() -> type | None:
    """TensorBoard's SummaryWriter: tensorboardX's (requirements.txt), else torch's own (needs the tensorboard
    package, which stock CUDA images carry), else None: training must not fail for want of its charts."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
    return SummaryWriter


class Logger:
    """Messages to the console (without breaking progress bars) and to log.txt; TensorBoard; rank 0 only.

    Nothing is shown or written until `open()` (called once the run is known to be valid and to have work left):
    messages before it are kept, then shown and written to log.txt, so that a refused run prints only its error.
    """

    def __init__(self, out: Path, active: bool):
        self.out, self.active, self.writer, self.log_file = out, active, None, None
        self.held: list[tuple[str, bool]] = []  # (message, whether it goes to the console too)

    def open(self) -> None:
        """Create the output folder, log.txt (with the messages so far, shown now) and the TensorBoard writer."""
        if self.active:
            self.out.mkdir(parents=True, exist_ok=True)
            self.log_file = open(self.out / "log.txt", "a")
            for message, console in self.held:
                if console:
                    tqdm.write(message)
                self.log_file.write(message + "\n")
            self.log_file.flush()
            self.held = []
            writer_class = summary_writer_class()
            if writer_class is None:
                self("TensorBoard logging is off: neither tensorboardX nor tensorboard is installed (log.txt has "
                     "every epoch's loss, lr and validation PSNR)")
            else:
                self.writer = guard_writer(writer_class(str(self.out / "tensorboard")))

    def __call__(self, message: str, console: bool = True) -> None:
        if not self.active:
            return
        if self.log_file is None:
            self.held.append((message, console))
            return
        if console:
            tqdm.write(message)
        self.log_file.write(message + "\n")
        self.log_file.flush()

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image.clamp(0, 1), step)

    def close(self) -> None:
        if self.writer is not None:
            close_writer(self.writer)  # a full disk loses the charts' last events quietly: log.txt has them
        if self.log_file is not None:
            with contextlib.suppress(OSError):  # a full disk: its error is reported already; the file is closed
                self.log_file.close()
