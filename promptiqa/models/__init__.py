"""PromptIQA models: construction by name and checkpoint loading (the one place that parses checkpoint files)."""
from ..devices import default_device
from .checkpoint import (CheckpointError, checkpoint_config, load_checkpoint, load_model, non_finite,
                         read_checkpoint, save_checkpoint, state_dict_sha256)
from .promptiqa import (ARCHITECTURES, DEFAULT_BACKBONE, PRESETS, Architecture, BackboneWeightsError, MoNet,
                        PromptIQA, PromptIQAWithoutPrompt, build_model, create_backbone, hooked_blocks, unwrap,
                        uses_prompt)

__all__ = ["ARCHITECTURES", "Architecture", "BackboneWeightsError", "CheckpointError", "DEFAULT_BACKBONE", "MoNet", "PRESETS",
           "PromptIQA", "PromptIQAWithoutPrompt", "build_model", "checkpoint_config", "create_backbone",
           "default_device", "hooked_blocks", "load_checkpoint", "load_model", "non_finite", "read_checkpoint",
           "save_checkpoint", "state_dict_sha256", "unwrap", "uses_prompt"]
