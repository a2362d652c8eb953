"""With ``--cpu``: ``x.cuda()`` → ``x.to(LEGACY_DEVICE)`` and ``torch.cuda.device_count()`` →
``legacy_device_count()`` (both from legacy_patches.runtime)."""
from __future__ import annotations

import libcst as cst

from .._base import Rule, RuleTransformer, code, dotted, method_name, positional, with_comma

RUNTIME = "legacy_patches.runtime"
CUDA_ONLY = {"torch.cuda.FloatTensor", "torch.cuda.LongTensor", "torch.cuda.DoubleTensor",
             "torch.cuda.ByteTensor", "torch.cuda.IntTensor", "torch.cuda.HalfTensor",
             "torch.cuda.set_device", "torch.cuda.synchronize"}


class CudaToDevice(Rule):
    id = "cuda-to-device"
    title = ".cuda() → .to(LEGACY_DEVICE); torch.cuda.device_count() → legacy_device_count()"
    broke_in = "no GPU (not a version change): only with --cpu"
    symptom = ("AssertionError: Torch not compiled with CUDA enabled  /  RuntimeError: Found no "
               "NVIDIA driver on your system  /  'Expecting at least one GPU, found none.'")
    triggers = ("cuda",)
    region_keys = r"\bcuda\b"
    review = ("LEGACY_DEVICE is cuda when a GPU is visible and cpu otherwise (force one with "
              "MT_REPRO_LEGACY_DEVICE=cpu); legacy_device_count() counts a CPU as one device, so "
              "batch sizes and learning rates scaled by the GPU count are those of one GPU. "
              "`.cuda(i)` loses its device index (reported). torch.cuda.FloatTensor & co, "
              "set_device and synchronize are reported. pin_memory=True is left: on a CPU it only "
              "warns.")
    default = False
    cpu_only = True

    def transformer(self, ctx):
        return _Transformer(ctx)


class _Transformer(RuleTransformer):
    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call):
        line = self.line(original_node)
        full = dotted(original_node.func)
        if full == "torch.cuda.device_count" and not original_node.args:
            self.ctx.need_import(RUNTIME, "legacy_device_count")
            self.ctx.edit(line, "torch.cuda.device_count() -> legacy_device_count()")
            return updated_node.with_changes(func=cst.Name("legacy_device_count"))
        if full in CUDA_ONLY:
            self.ctx.manual(line, f"{code(original_node)} needs a GPU")
            return updated_node
        if method_name(original_node) != "cuda" or dotted(original_node.func.value) == "torch":
            return updated_node
        args = list(updated_node.args)
        device = positional(updated_node)[:1] + [a for a in args
                                                 if a.keyword is not None and a.keyword.value == "device"]
        if device:
            self.ctx.manual(line, f"{code(original_node)}: device index dropped")
        rest = [a for a in args if all(a is not d for d in device)]
        if rest:
            rest[-1] = rest[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        device_arg = cst.Arg(value=cst.Name("LEGACY_DEVICE"))
        new_args = [with_comma(device_arg), *rest] if rest else [device_arg]
        self.ctx.need_import(RUNTIME, "LEGACY_DEVICE")
        self.ctx.edit(line, f"{code(original_node.func)}(...) -> .to(LEGACY_DEVICE)")
        return updated_node.with_changes(
            func=updated_node.func.with_changes(attr=cst.Name("to")), args=new_args)
