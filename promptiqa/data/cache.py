"""A per-dataset cache of the resized uint8 images in one memory-mapped .npy (N x S x S x 3), made once.

Layout: <cache_dir>/<key>_<S>/images.npy and records.json (names, scores, references, image size, source root
and a fingerprint of every file's name, size and mtime); a requirement `key:req` uses its dataset's `key` cache.
All ranks and data-loader workers map the same file read-only; the map is opened lazily, so a pickled ImageCache
sent to a worker carries only the path.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Union

import numpy as np
from tqdm import tqdm

from ..entry import command
from ..fileio import FileLock, write_json
from .images import DEFAULT_IMAGE_SIZE, DiskImages
from .records import DatasetRecords, image_set

CACHE_FORMAT = "promptiqa-image-cache"
CACHE_VERSION = 2  # 2: each JPEG checked complete before caching; a version-1 cache may hold truncated ones, grey
IMAGES_FILE = "images.npy"
RECORDS_FILE = "records.json"


class StaleCacheError(ValueError):
    """The cache does not match the dataset on disk (files changed, records differ, or another image size)."""


def cache_path(ds: DatasetRecords, image_size: int, cache_dir: Union[str, Path]) -> Path:
    """The cache folder of `ds` at `image_size` inside `cache_dir`."""
    # a requirement (`agiqa_3k:align`) has its dataset's images: one cache serves them all
    safe_key = re.sub(r"[^A-Za-z0-9._-]", "_", image_set(ds.key))
    return Path(cache_dir) / f"{safe_key}_{image_size}"


def fingerprint(ds: DatasetRecords) -> str:
    """SHA-256 over each record's name, file size and mtime: changes when any image file is replaced or touched."""
    digest = hashlib.sha256()
    for record in ds.records:
        try:
            st = os.stat(record.path)
        except FileNotFoundError:
            raise FileNotFoundError(f"dataset '{ds.key}': image file not found: {record.path}") from None
        digest.update(f"{record.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class ImageCache:
    """Read-only view of a prepared cache: cache[i] is record i's resized uint8 HWC RGB image."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        meta_file = self.path / RECORDS_FILE
        if not meta_file.is_file() or not (self.path / IMAGES_FILE).is_file():
            raise FileNotFoundError(f"no complete image cache in {self.path} (run {command('prepare')})")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except ValueError as err:  # not JSON, or not UTF-8: a damaged file
            raise StaleCacheError(f"{meta_file} is damaged ({err}); prepare the cache again") from None
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION:
            meta = meta if isinstance(meta, dict) else {}
            raise StaleCacheError(f"{self.path} holds cache format {meta.get('format')!r} version "
                                  f"{meta.get('version')!r}; expected {CACHE_FORMAT!r} version {CACHE_VERSION}: "
                                  f"prepare it again")
        # records.json also holds the scores, references, key and root (for a person reading the folder); reading
        # the cache needs only these three.
        try:
            self.image_size: int = int(meta["image_size"])
            self.names: List[str] = list(meta["names"])
            self.fingerprint: str = meta["fingerprint"]
        except (KeyError, TypeError, ValueError) as err:  # a hand-edited records.json
            raise StaleCacheError(f"{meta_file} lacks or mistypes an entry ({type(err).__name__}: {err}); prepare "
                                  f"the cache again") from None
        expected = (len(self.names), self.image_size, self.image_size, 3)
        try:
            images = np.load(self.path / IMAGES_FILE, mmap_mode="r")
        except (ValueError, OSError, EOFError) as err:  # e.g. a copy cut short: "mmap length is greater than file size"
            raise StaleCacheError(f"{self.path / IMAGES_FILE} is incomplete or damaged ({err}); prepare the cache "
                                  f"again") from None
        if images.shape != expected or images.dtype != np.uint8:
            raise StaleCacheError(f"{self.path / IMAGES_FILE} holds {images.dtype} {images.shape}, expected uint8 "
                                  f"{expected}; delete the folder and prepare it again")
        del images
        self._images = None  # opened on first access in each process

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.path / IMAGES_FILE, mmap_mode="r")
        return np.array(self._images[i])  # a private, writable copy; the map stays read-only

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_images"] = None  # workers re-map the file instead of receiving a copy of the pixels
        return state

    def check(self, ds: DatasetRecords, image_size: int) -> None:
        """Raise StaleCacheError, saying why, unless this cache holds exactly `ds`'s images at `image_size`."""
        if self.image_size != image_size:
            raise StaleCacheError(f"cache {self.path} holds {self.image_size}px images, {image_size}px requested")
        names = [r.name for r in ds.records]
        if names != self.names:
            raise StaleCacheError(f"cache {self.path} lists other records than dataset '{ds.key}' at {ds.root} "
                                  f"({len(self.names)} cached, {len(names)} now); prepare it again")
        try:
            current = fingerprint(ds)
        except FileNotFoundError as e:
            raise StaleCacheError(f"cache {self.path} is stale: {e}") from None
        if current != self.fingerprint:
            raise StaleCacheError(f"cache {self.path} is stale: image files of '{ds.key}' changed size or "
                                  f"modification time since it was prepared; prepare it again")


def _is_valid(path: Path, ds: DatasetRecords, image_size: int) -> bool:
    try:
        ImageCache(path).check(ds, image_size)
        return True
    except (FileNotFoundError, StaleCacheError):
        return False


def prepare_cache(ds: DatasetRecords, image_size: int, cache_dir: Union[str, Path], workers: int = 0) -> Path:
    """Decode and resize every image of `ds` once into the cache (skipped when up to date); returns its folder.

    One prepare per cache at a time: a second one waits for the first (a lock file beside the cache folder) and then
    finds the cache made. The new cache is written into a folder of its own and swapped in only when complete, so a
    failed or interrupted prepare leaves the previous cache as it was (and readers never see a half-written one)."""
    out = cache_path(ds, image_size, cache_dir)
    if _is_valid(out, ds, image_size):
        return out
    digest = fingerprint(ds)  # also fails early, naming the file, if an image is missing
    if Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise NotADirectoryError(f"the cache folder {cache_dir} is a file")
    created = [folder for folder in out.parents if not folder.exists()]  # removed again on a failure
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out.parent / f"{out.name}.lock", f"the image cache {out}")
    lock.acquire(wait=True, on_wait=lambda holder: print(f"waiting for {holder}, which is preparing {out}",
                                                         file=sys.stderr, flush=True))
    for leftover in (*out.parent.glob(f"{out.name}.tmp-*"), *out.parent.glob(f"{out.name}.old-*")):
        shutil.rmtree(leftover, ignore_errors=True)   # a killed prepare's (the lock is ours: no one else builds)
    build = out.parent / f"{out.name}.tmp-{os.getpid()}"
    try:
        if not _is_valid(out, ds, image_size):   # else made by the process this one waited for
            _build_cache(ds, image_size, workers, digest, build)
            _swap_in(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)   # a bad image, a full disk or Ctrl-C: no full-size leftover
        lock.release()
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    lock.release()
    return out


def _build_cache(ds: DatasetRecords, image_size: int, workers: int, digest: str, build: Path) -> None:
    """Write a complete cache (images, then records) into the new folder ``build``."""
    build.mkdir()
    source = DiskImages([r.path for r in ds.records], image_size, dataset=ds.key)
    _write_images(build / IMAGES_FILE, source, len(ds.records), image_size, workers,
                  f"prepare {ds.key} {image_size}px")
    meta = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "key": ds.key, "root": ds.root,
        "image_size": image_size, "count": len(ds.records), "fingerprint": digest,
        "names": [r.name for r in ds.records], "scores": [r.score for r in ds.records],
        "references": [r.reference for r in ds.records],
    }
    write_json(build / RECORDS_FILE, meta, indent=None)


def _swap_in(build: Path, out: Path) -> None:
    """Replace the cache folder ``out`` by the complete ``build``: the old one is renamed aside, the new one renamed
    in, the old one deleted (a reader that has the old images mapped keeps them until it closes them)."""
    if not out.exists():
        os.rename(build, out)
        return
    old = out.parent / f"{out.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.rename(out, old)
    os.rename(build, out)
    shutil.rmtree(old, ignore_errors=True)


def _write_images(tmp: Path, source: DiskImages, n: int, image_size: int, workers: int, desc: str) -> None:
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, image_size, image_size, 3))
    with tqdm(total=n, desc=desc, unit="img") as bar:
        if workers > 0:
            # OpenCV releases the GIL while decoding and resizing, so threads scale without pickling pixels.
            pool = ThreadPoolExecutor(workers)
            try:
                for i, pixels in enumerate(pool.map(source.__getitem__, range(n))):
                    images[i] = pixels
                    bar.update()
            finally:  # on an error, the images not yet decoded are not waited for
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            for i in range(n):
                images[i] = source[i]
                bar.update()
    images.flush()
    del images


def open_image_source(ds: DatasetRecords, image_size: int = DEFAULT_IMAGE_SIZE,
                      cache_dir: Union[str, Path, None] = None, feeds_gpu: bool = False):
    """Record i's uint8 HWC image by index: from the cache when present and valid, else decoded from disk (with a
    warning when a cache was asked for, or when the images feed a GPU: ``feeds_gpu``)."""
    disk = DiskImages([r.path for r in ds.records], image_size, dataset=ds.key)
    if cache_dir is None:
        if feeds_gpu:
            warnings.warn(f"no --cache_dir: '{ds.key}' is decoded from disk every epoch, which starves a GPU "
                          f"(decoding a 1024x768 JPEG costs 25-40x reading the cache); prepare a cache once with: "
                          f"{command('prepare')} --dataset {ds.key} --root {ds.root} --cache_dir data/cache "
                          f"--image_size {image_size} -j 8, then train with --cache_dir data/cache", stacklevel=2)
        return disk
    path = cache_path(ds, image_size, cache_dir)
    if not (path / RECORDS_FILE).is_file():
        warnings.warn(f"no image cache for '{ds.key}' at {path}; decoding images from disk (make one with: "
                      f"{command('prepare')} --dataset {ds.key} --root {ds.root} --cache_dir {cache_dir} "
                      f"--image_size {image_size})", stacklevel=2)
        return disk
    try:
        cache = ImageCache(path)
        cache.check(ds, image_size)
    except (StaleCacheError, FileNotFoundError) as e:
        warnings.warn(f"refusing the image cache: {e}; decoding images from disk instead", stacklevel=2)
        return disk
    return cache
