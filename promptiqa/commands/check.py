"""``promptiqa check``: promptiqa.data.check's command, with checkpoints (``--splits CHECKPOINT``) read by the model
layer's reader, which the data layer does not import."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``promptiqa check`` (promptiqa.data.check's)."""
    from promptiqa.data.check import add_arguments as data_check_arguments

    data_check_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """promptiqa.data.check's check, reading checkpoints with promptiqa.models.checkpoint's reader."""
    from promptiqa.data.check import run as data_check
    from promptiqa.models.checkpoint import read_checkpoint

    return data_check(args, read_checkpoint=read_checkpoint)
