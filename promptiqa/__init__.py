"""PromptIQA: no-reference image quality assessment under a requirement given as image-score pairs."""

__version__ = "0.1.0"
