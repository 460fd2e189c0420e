"""The official image pipeline, split at the uint8 boundary so the direct and the cached paths share the tail.

read_image: OpenCV decode (BGR, EXIF orientation applied) -> 224x224 bicubic resize of the uint8 image (no crop,
aspect not kept) -> RGB. Samples stay uint8 (CHW, ``to_chw``) through the DataLoader, a quarter of float32's bytes
through shared and pinned memory; every consumer calls ``normalise`` after the copy to the device: /255 ->
(x - 0.5) / 0.5 -> float32 in the official order (on a GPU, looked up in a 256-entry table computed that way), so the
result is bit-identical to the official loader (which also resizes the uint8 BGR image and converts to float32 only
afterwards) on every device. ``to_tensor`` does both on the CPU.

Samples are served unflipped: training flips whole batches of CHW tensors on its own random stream (the engine's
flip_batch; the official flip is vertical, see docs/datasets.md#images-and-the-flip), so the same dataset serves
training and evaluation.
"""
from __future__ import annotations

import functools
import os
import re
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..config import ModelSettings
from ..errors import PromptIQAError
from .formats.common import ImageReadError, check_image_file

DEFAULT_IMAGE_SIZE = ModelSettings.image_size   # the official input side: stated once, as the config's default


def read_image(path: Union[str, Path], size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """Decode an image file and resize it to size x size (bicubic); returns uint8 HWC RGB.

    Raises FileNotFoundError, or ImageReadError for a folder, a truncated JPEG or an undecodable file."""
    check_image_file(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(f"OpenCV could not decode {path} (corrupt, truncated or an unsupported format)")
    return cv2.cvtColor(resize_image(image, size), cv2.COLOR_BGR2RGB)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize of a uint8 HxWx3 image to size x size (no crop, aspect not kept), as the official loader."""
    # cv2.resize treats channels independently, so resizing RGB equals resizing BGR and then converting.
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_CUBIC)


def _official_normalisation(pixels: np.ndarray) -> np.ndarray:
    """uint8 values -> float32 (x / 255 - 0.5) / 0.5 in the official order of operations: the one statement of the
    input normalisation (NumPy's float32 steps are each correctly rounded, whatever the array's shape)."""
    x = pixels.astype(np.float32)
    x /= 255
    x -= 0.5
    x /= 0.5
    return x


NORMALISED_LEVELS = _official_normalisation(np.arange(256, dtype=np.uint8))   # each level's value, for devices


@functools.lru_cache(maxsize=None)
def _levels_on(device: torch.device) -> torch.Tensor:
    return torch.from_numpy(NORMALISED_LEVELS).to(device)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape, e.g. (B, 3, S, S)) -> float32 in [-1, 1] on their device, bit-identical to
    (x / 255 - 0.5) / 0.5 in float32: computed on the CPU, looked up in NORMALISED_LEVELS elsewhere (CUDA's division
    by a scalar multiplies by the reciprocal, which is not bit-identical)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalise expects uint8 images (as the loaders serve them), got {images.dtype}")
    if images.device.type == "cpu":
        # The arithmetic itself, in NumPy: no intra-op thread pool, and 2x faster than a lookup here (12 vs 28 ms for a
        # 66-image step; torch's CPU indexing took 100-200 ms).
        return torch.from_numpy(_official_normalisation(images.numpy()))
    return _levels_on(images.device)[images.long()]   # long indices: a uint8 index would be read as a mask


def to_chw(image: np.ndarray) -> torch.Tensor:
    """uint8 HWC RGB -> contiguous uint8 CHW tensor: what the datasets serve."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} with shape {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HWC RGB -> float32 CHW in [-1, 1] on the CPU: ``normalise(to_chw(image))``."""
    return normalise(to_chw(image))


class DiskImages:
    """Indexable uint8 HWC images decoded from files on demand (the uncached image source); read errors name
    ``dataset`` when given."""

    def __init__(self, paths: Sequence[Union[str, Path]], image_size: int = DEFAULT_IMAGE_SIZE,
                 dataset: Optional[str] = None):
        self.paths = [str(p) for p in paths]
        self.image_size = image_size
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        try:
            return read_image(self.paths[i], self.image_size)
        except OSError as err:
            if self.dataset is None:
                raise
            raise ImageReadError(f"[{self.dataset}] {err}") from None


class _Failed:
    """A sample that could not be read, carried to the main process as data (see ImageLoader)."""

    def __init__(self, message: str):
        self.message = message


class _CatchReadErrors(Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        try:
            return self.dataset[key]
        except OSError as err:  # a missing, truncated or undecodable file: the user's to fix, not a bug
            return _Failed(str(err))


class _CollateUnlessFailed:
    def __init__(self, collate):
        self.collate = collate

    def __call__(self, items):
        failed = next((item for item in items if isinstance(item, _Failed)), None)
        return failed if failed is not None else self.collate(items)


class SharedMemoryError(PromptIQAError, RuntimeError):
    """DataLoader workers ran out of shared memory (/dev/shm), e.g. under Docker's 64 MB default."""


# PyTorch's report of a worker killed by SIGBUS, which a full /dev/shm causes when the worker writes a batch into it;
# its SIGCHLD handler raises it in the main thread wherever that thread is (fetching, or in the step).
_WORKER_BUS_ERROR = re.compile(r"killed by signal: Bus error")
# While fetching, also a worker's or the main process's failure to create, grow or map a shared-memory file.
_SHM_FAILURE = re.compile(r"killed by signal: Bus error|out of shared memory|No space left on device"
                          r"|unable to (allocate shared memory|write to file|mmap \d+ bytes from file)")


def _failure_line(err: BaseException, pattern: re.Pattern) -> Optional[str]:
    """The line of ``err``, or of what caused it, that ``pattern`` finds (its first sentence); else None."""
    seen = set()
    while err is not None and id(err) not in seen:   # the SIGBUS report arrives as the cause of "exited unexpectedly"
        seen.add(id(err))
        for line in str(err).splitlines():
            if pattern.search(line):
                return re.sub(r"^\w*Error: ", "", line.strip()).split(". ")[0]
        err = err.__cause__ or err.__context__
    return None


def _worker_death_report(wait: float) -> Optional[RuntimeError]:
    """PyTorch's report of a dead worker, which its SIGCHLD handler raises in the main thread once the death is seen
    (within ``wait`` seconds); None if no report comes."""
    try:
        time.sleep(wait)
    except RuntimeError as report:
        return report
    return None


@contextmanager
def explain_shared_memory_failures(fetching: bool = False):
    """Within (also as a decorator): a DataLoader worker killed by a full /dev/shm is raised as one SharedMemoryError;
    with ``fetching`` (ImageLoader's own iteration), so are PyTorch's shared-memory write and map failures."""
    try:
        yield
    except (RuntimeError, OSError) as err:
        if isinstance(err, PromptIQAError):
            raise
        said = _failure_line(err, _SHM_FAILURE if fetching else _WORKER_BUS_ERROR)
        if said is None and fetching and isinstance(err, ConnectionError):
            # A batch whose worker died before handing it over shows first as a refused or reset connection; why
            # the worker died comes a moment later.
            report = _worker_death_report(1.0)
            if report is None:
                raise
            said = _failure_line(report, _WORKER_BUS_ERROR)
            if said is None:
                raise report from err
        if said is None:
            raise
        raise SharedMemoryError(f"data loading ran out of shared memory (/dev/shm; PyTorch: {said}): run the "
                                f"container with --shm-size=8g or --ipc=host, or use fewer --workers") from err


@contextmanager
def _one_opencv_thread(enabled: bool):
    """Within: OpenCV on one thread in this process, its setting restored after. Workers forked meanwhile inherit the
    one thread; setting it inside a forked worker instead can hang for good (OpenCV joins the parent's pool threads,
    which the child does not have, and waits on whatever thread the child has reused their slots for)."""
    before = cv2.getNumThreads() if enabled else 1
    if before != 1:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        if before != 1:
            cv2.setNumThreads(before)


def _leave_stop_signals_to_the_parent() -> None:
    """In a loader worker: ignore SIGINT, and SIGTERM unless the worker's parent sent it.

    A terminal's Ctrl-C and a scheduler's SIGTERM reach every process of the job: the main process decides (training
    finishes its step and saves a checkpoint) and then ends its workers; a worker killed by the signal would instead
    fail the run from PyTorch's SIGCHLD handler, wherever the main process was. But the parent itself ends a worker
    that does not stop with SIGTERM (``Process.terminate``, at shutdown and at exit), so that one must still work: a
    thread waits for SIGTERM (blocked in every other thread) and ends the worker when its parent was the sender,
    with status 0: it stopped as asked (PyTorch's SIGCHLD handler, still armed at exit after a failure, would report
    any other status as a second error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):   # no sender to tell apart (macOS): SIGTERM keeps its default
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def watch() -> None:
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
                os._exit(0)

    threading.Thread(target=watch, name="promptiqa-sigterm", daemon=True).start()


class _WorkerInit:
    """Each worker decodes on one OpenCV and one torch thread (the workers are the parallelism; nested thread pools
    only contend for the same cores) and leaves SIGINT and SIGTERM to the main process, then runs the user's
    worker_init_fn."""

    def __init__(self, user_fn=None):
        self.user_fn = user_fn

    def __call__(self, worker_id: int) -> None:
        _leave_stop_signals_to_the_parent()   # first: threads started later inherit its signal mask
        if cv2.getNumThreads() != 1:   # a spawned worker (a forked one inherits one thread): a fresh OpenCV, safe
            cv2.setNumThreads(1)
        torch.set_num_threads(1)
        if self.user_fn is not None:
            self.user_fn(worker_id)


class ImageLoader(DataLoader):
    """A DataLoader for image datasets: read errors, in the main process or any worker, are raised in the main
    process as one ImageReadError naming the file (a worker's own exception would arrive wrapped in its traceback);
    a worker death from a full /dev/shm while fetching is one SharedMemoryError saying how to give it more (the code
    that consumes the batches marks itself with ``explain_shared_memory_failures`` for a death reported there);
    workers decode on one OpenCV thread each and ignore SIGINT/SIGTERM (the main process acts on them)."""

    def __init__(self, dataset, *args, collate_fn=None, worker_init_fn=None, **kwargs):
        super().__init__(_CatchReadErrors(dataset), *args, collate_fn=_CollateUnlessFailed(collate_fn or
                                                                                          default_collate),
                         worker_init_fn=_WorkerInit(worker_init_fn), **kwargs)

    def __iter__(self):
        with explain_shared_memory_failures(fetching=True):
            with _one_opencv_thread(self.num_workers > 0):
                batches = super().__iter__()   # starts the workers; kept alive until a failure has been explained
            for batch in batches:
                if isinstance(batch, _Failed):
                    raise ImageReadError(batch.message)
                yield batch


class IQAImages(Dataset):
    """(image, label, index) samples: image uint8 CHW (``normalise`` it on the device), label float32 scalar, index
    the position in this dataset.

    `paths_or_source` is a list of image paths or anything indexable returning uint8 HWC images (an ImageCache,
    DiskImages); `indices` picks the source entries to serve (e.g. a split's record indices), aligned with
    `labels`. Reading a sample draws no random numbers.
    """

    def __init__(self, paths_or_source, labels, image_size: int = DEFAULT_IMAGE_SIZE,
                 indices: Optional[Sequence[int]] = None):
        if isinstance(paths_or_source, (list, tuple)) and all(isinstance(p, (str, Path)) for p in paths_or_source):
            source = DiskImages(paths_or_source, image_size)
        else:
            source = paths_or_source
        source_size = getattr(source, "image_size", image_size)
        if source_size != image_size:
            raise ValueError(f"the image source holds {source_size}px images but image_size={image_size}")
        self.source = source
        self.indices = list(range(len(source))) if indices is None else [int(i) for i in indices]
        self.labels = np.asarray(labels, dtype=np.float32).reshape(-1)
        if len(self.labels) != len(self.indices):
            raise ValueError(f"{len(self.labels)} labels for {len(self.indices)} images")
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        pixels = self.source[self.indices[i]]
        if pixels.shape != (self.image_size, self.image_size, 3):
            raise ValueError(f"image source entry {self.indices[i]} has shape {pixels.shape}, "
                             f"expected ({self.image_size}, {self.image_size}, 3)")
        return to_chw(pixels), torch.tensor(self.labels[i]), i
