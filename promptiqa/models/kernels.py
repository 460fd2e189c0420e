"""Which scaled-dot-product-attention kernel each attention module of a model takes on its device and precision.

PyTorch picks the kernel per call (flash, memory-efficient, cuDNN, the CPU flash kernel, or the unfused math path)
from the device, dtype, layout and head size; this runs one forward under the profiler and names, per attention
class, the kernels its calls took. A diagnostic for acceptance scripts (scripts/gpu_check.sh), not used in training.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn

from ..devices import autocast

# profiled aten op -> the backend's name; the CPU's own flash kernel is named apart from CUDA's
SDPA_KERNELS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash_cpu",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_attention_math_for_mps": "math_mps",
}
NO_SDPA = "matmul"   # an attention module that never called SDPA (explicit matmul + softmax)
_SCOPE = "promptiqa.attention:"


def _class_key(module: nn.Module) -> str:
    """The class name; a class from another package (timm's ViT Attention) carries that package's name."""
    cls = type(module)
    package = cls.__module__.split(".")[0]
    return cls.__name__ if package == __name__.split(".")[0] else f"{package}.{cls.__name__}"


def attention_kernels(model: nn.Module, amp: str = "none", training: bool = False,
                      batch_size: int = 2) -> Dict[str, str]:
    """{attention class: backend} for one forward of ``model`` (a PromptIQA or MoNet-based model) on its own
    device under ``amp``, on random images and scores; classes whose calls took several kernels list them joined by
    "+". ``training`` runs the forward in train mode with gradients (the kernels of a training step's forward);
    the model's buffers and mode are restored afterwards."""
    from torch.profiler import ProfilerActivity, profile, record_function

    param = next(model.parameters())
    device = param.device
    attention = {m for m in model.modules() if type(m).__name__.endswith("Attention")}
    scopes = []

    def enter(module, args):
        scopes.append(record_function(_SCOPE + _class_key(module)))
        scopes[-1].__enter__()

    def leave(module, args, output):
        scopes.pop().__exit__(None, None, None)

    generator = torch.Generator().manual_seed(0)
    size = model.image_size
    images = (torch.rand(batch_size, 3, size, size, generator=generator) * 2 - 1).to(device, param.dtype)
    scores = torch.rand(batch_size, generator=generator).to(device)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    hooks = [h for m in attention for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        model.train(training)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with torch.set_grad_enabled(training), autocast(device, amp):
                model(images, scores)
    finally:
        for h in hooks:
            h.remove()
        while scopes:
            scopes.pop().__exit__(None, None, None)
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    found: Dict[str, list] = {}
    for event in prof.events():
        if event.name.startswith(_SCOPE):
            found.setdefault(event.name[len(_SCOPE):], [])
        kernel = SDPA_KERNELS.get(event.name)
        parent = event.cpu_parent
        while kernel is not None and parent is not None and not parent.name.startswith(_SCOPE):
            parent = parent.cpu_parent
        if kernel is not None and parent is not None:
            kernels = found.setdefault(parent.name[len(_SCOPE):], [])
            if kernel not in kernels:
                kernels.append(kernel)
    return {key: "+".join(kernels) or NO_SDPA for key, kernels in found.items()}
