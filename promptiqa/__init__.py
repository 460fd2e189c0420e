"""PromptIQA: no-reference image quality assessment under a requirement given as image-score pairs."""

__version__ = "0.1.0"

# Heavy names are imported on first use, so `import promptiqa` (and reading __version__) does not load torch.
_LAZY = {"Predictor": "promptiqa.predict"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
