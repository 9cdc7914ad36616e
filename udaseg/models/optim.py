"""Parameter groups for the optimizer: DAFormer's name-based multipliers.

DAFormer (docs/methods.md D4) uses mmcv's ``paramwise_cfg.custom_keys``: a parameter whose full name contains
``head`` gets lr ×10; one containing ``norm`` gets weight decay ×0; keys are tried longest
first and the first match wins (``pos_block`` is also listed there but names nothing in MiT, so
it is left out). The rule is purely about names, so what it does depends on how modules are
named. Ours were named so that it does what it does in the reference:

* the decode head lives at ``decode_head.*`` (mmseg: ``decode_head.*``) → lr ×10, *including*
  its BatchNorms (``head`` is tried before ``norm``, as mmcv's stable sort of equally long keys
  keeps ``head`` first), which keep weight decay — as the reference's decoder ``bn`` do;
* MiT's LayerNorms keep the original names (``backbone.block1.0.norm1``, ``backbone.norm1``,
  ``…patch_embed1.norm``, ``…attn.norm``) → weight decay 0;
* biases keep weight decay; BatchNorms named ``bn`` outside a head (DeepLab ResNet, tiny CNN)
  keep weight decay too — the DeepLab ResNet's are frozen and never reach the optimizer.

Modules that a method adds and wants at ×10 (HRDA's attention head, DAF's depth branch) should
carry ``head`` in their attribute name. The DeepLab-v2 family (SGD, classifier ×10, decay on all)
is the same call with ``no_decay_norm=False``. Frozen parameters (``requires_grad=False``) are left
out. One group per distinct (lr, decay) pair; the backbone group (×1 lr) comes first, so the
trainer's "lr of the first group" is the base lr.
"""

from __future__ import annotations

from torch import nn


def param_groups(model: nn.Module, base_lr: float, weight_decay: float, head_lr_mult: float = 10.0,
                 no_decay_norm: bool = True, custom_keys: dict[str, dict[str, float]] | None = None) -> list[dict]:
    """Optimizer parameter groups ``[{"params", "lr", "weight_decay", "name"}, …]``.

    ``custom_keys`` replaces the default rule: ``{substring: {"lr_mult": x, "decay_mult": y}}``,
    matched against full parameter names, longest key first (ties keep the given order).
    """
    if custom_keys is None:
        custom_keys = {"head": {"lr_mult": head_lr_mult}}
        if no_decay_norm:
            custom_keys["norm"] = {"decay_mult": 0.0}
    ordered = sorted(custom_keys, key=len, reverse=True)  # stable: equal lengths keep their order

    groups: dict[tuple[float, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr_mult = decay_mult = 1.0
        matched = "default"
        for key in ordered:
            if key in name:
                lr_mult = custom_keys[key].get("lr_mult", 1.0)
                decay_mult = custom_keys[key].get("decay_mult", 1.0)
                matched = key
                break
        group = groups.setdefault((lr_mult, decay_mult), {
            "params": [], "lr": base_lr * lr_mult, "weight_decay": weight_decay * decay_mult,
            "name": f"{matched}(lr×{lr_mult:g},decay×{decay_mult:g})", "param_names": []})
        group["params"].append(param)
        group["param_names"].append(name)
    # The ×1-lr groups first (decayed before not), so param_groups[0]["lr"] is the base lr.
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0] != 1.0, k[1] != 1.0))]
