"""Datasets (registry, label files, label normalisation) and the data pipeline built on them.

Names are imported lazily, so that light tools (``python -m promptiqa.data.check``) do not pay for torch.
"""
from importlib import import_module

_EXPORTS = {
    "records": ("DatasetRecords", "Record", "image_set"),
    "formats": ("DatasetError", "image_fingerprint", "verify_image"),
    "registry": ("DATASET_KEYS", "load_dataset", "locate_images", "parse_data_root_args", "resolve_roots"),
    "labels": ("normalise_labels",),
    "splits": ("OFFICIAL_SEED", "SPLIT_SEEDS", "Split", "carve_validation", "load_splits", "make_split",
               "official_train_order", "recorded_split", "resolve_split", "save_splits", "split_from_units",
               "split_units", "SplitError"),
    "sampling": ("sample_isps",),
    "groups": ("GroupSampler", "MultiDataset", "TestShardSampler"),
    "images": ("ImageLoader", "ImageReadError", "IQAImages", "SharedMemoryError", "check_image_file", "normalise",
               "read_image", "to_chw", "to_tensor"),
    "cache": ("ImageCache", "open_image_source", "prepare_cache"),
    "views": ("DatasetViews", "load_views"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'promptiqa.data' has no attribute {name!r}")
    value = getattr(import_module(f"promptiqa.data.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
