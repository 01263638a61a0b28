"""Report towers: token ids ``[B, L]`` in, one embedding ``[B, D]`` out.

``clip`` is open_clip's causal text transformer (the published EchoCLIP's) with its
parameter names kept, so open_clip checkpoints map key for key; only pooling and the
optional value-aware embeddings are ours. ``hf`` is any transformers encoder, built
from a config dict or loaded from a local folder (never from the network).

Every tower has ``forward(ids) -> [B, D]``, ``forward_features(ids) -> [B, L, W]`` and
``output_dim``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from echoclip.errors import ModelError
from echoclip.models.checkpointing import set_hf_checkpointing
from echoclip.models.config import TextTowerConfig
from echoclip.models.value_embedding import ValueEmbedding
from echoclip.registry import Registry


def mean_over_tokens(x: torch.Tensor, ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """``[B, L, W] -> [B, W]``: the mean of the features of the tokens that are not padding."""
    keep = (ids != pad_id).unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)


def eos_positions(ids: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """Index of the first ``eos_id`` in each row, or of the last non-pad token where there is none."""
    is_eos = ids == eos_id
    first_eos = is_eos.int().argmax(dim=1)
    not_pad = (ids != pad_id).int()
    last_not_pad = ids.shape[1] - 1 - not_pad.flip(1).argmax(dim=1)
    return torch.where(is_eos.any(dim=1), first_eos, last_not_pad)


def row_lengths(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Per row, one past its last token that is not padding (0 for a row of padding only)."""
    not_pad = (ids != pad_id).int()
    return torch.where(not_pad.any(dim=1), ids.shape[1] - not_pad.flip(1).argmax(dim=1), 0)


# A group's fixed cost, in padded tokens: one more call of the tower's layers. On 2 CPU
# cores (echoclip-tiny's text tower) 32 to 128 timed alike. What grouping saves a demo
# step: benchmarks/bench_text_tower.py and docs/experiments.md
GROUP_COST_TOKENS = 64


def length_groups(lengths: list[int], max_groups: int = 4) -> list[list[int]]:
    """Row indices in groups of similar length: the split, shortest first, into 1 to ``max_groups``
    groups of equal row count that pads the fewest tokens (plus ``GROUP_COST_TOKENS`` a group).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best: list[list[int]] = [order]
    best_cost = len(order) * max(lengths, default=0) + GROUP_COST_TOKENS
    for k in range(2, min(max_groups, len(order)) + 1):
        bounds = [round(i * len(order) / k) for i in range(k + 1)]
        groups = [order[a:b] for a, b in itertools.pairwise(bounds)]
        cost = sum(len(g) * lengths[g[-1]] + GROUP_COST_TOKENS for g in groups)
        if cost < best_cost:
            best, best_cost = groups, cost
    return best


class ClipTextTower(nn.Module):
    """open_clip's ``TextTransformer`` (as ``self.clip``), pooled at the end token or averaged.

    open_clip pools at ``argmax(ids)`` because CLIP's end token has the largest id;
    other tokenizers (ours) put it elsewhere, so ``pool="eos"`` looks it up.
    """

    def __init__(self, cfg: TextTowerConfig, embed_dim: int) -> None:
        super().__init__()
        from open_clip.model import CLIPTextCfg, _build_text_tower

        if cfg.pool == "eos" and cfg.eos_token_id is None:
            raise ModelError("text: pool 'eos' needs eos_token_id (create the model with its tokenizer)")
        self.config = cfg
        self.clip = _build_text_tower(
            embed_dim,
            CLIPTextCfg(
                context_length=cfg.context_length,
                vocab_size=cfg.vocab_size,
                width=cfg.width,
                heads=cfg.heads,
                layers=cfg.layers,
                mlp_ratio=cfg.mlp_ratio,
                proj_bias=cfg.proj_bias,
                pad_id=cfg.pad_token_id,
            ),
            quick_gelu=cfg.quick_gelu,
        )
        self.values = (
            ValueEmbedding(cfg.vocab_size, cfg.width, cfg.value_frequencies, cfg.value_scale)
            if cfg.value_embeddings
            else None
        )
        self.output_dim = embed_dim
        # how many groups of similar length a batch may be split into (1: one call, padded
        # to the longest row; benchmarks/bench_text_tower.py compares the two)
        self.max_length_groups = 4
        if cfg.grad_checkpointing:
            self.set_grad_checkpointing(True)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.clip.set_grad_checkpointing(enable)

    def forward_features(self, ids: torch.Tensor) -> torch.Tensor:
        """Token features after the final norm, ``[B, L, width]``."""
        clip = self.clip
        length = ids.shape[1]
        dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(ids)
        if self.values is not None:
            x = x + self.values(ids)
        x = x.to(dtype) + clip.positional_embedding[:length].to(dtype)
        mask = None if clip.attn_mask is None else clip.attn_mask[:length, :length]
        x = clip.transformer(x, attn_mask=mask)
        return clip.ln_final(x)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.clip.attn_mask is None or ids.is_meta or len(ids) == 0:
            return self._embed(ids)
        # Causal attention: no token sees the padding after it, so a row's embedding does
        # not depend on how far it is padded. Rows of similar length are encoded together,
        # each group trimmed to its longest row (a report of 40 tokens costs 40, not 77).
        lengths = row_lengths(ids, self.config.pad_token_id)
        groups = length_groups(lengths.tolist(), self.max_length_groups)
        if len(groups) == 1:
            return self._embed(ids[:, : max(1, int(lengths.max()))])
        parts, order = [], []
        for rows in groups:
            index = torch.as_tensor(rows, device=ids.device)
            width = max(1, int(lengths[index].max()))
            parts.append(self._embed(ids[index, :width]))
            order.append(index)
        inverse = torch.empty_like(lengths)
        inverse[torch.cat(order)] = torch.arange(len(ids), device=ids.device)
        return torch.cat(parts)[inverse]

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(ids)
        if self.config.pool == "mean":
            # every sentence adds its own share to the embedding, as a one-sentence prompt does
            pooled = mean_over_tokens(x, ids, self.config.pad_token_id)
        else:
            if self.config.pool == "argmax":
                idx = ids.argmax(dim=1)
            else:
                idx = eos_positions(ids, self.config.eos_token_id, self.config.pad_token_id)
            pooled = x[torch.arange(x.shape[0], device=x.device), idx]
        proj = self.clip.text_projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj


def hf_config_from_dict(d: dict[str, Any]) -> Any:
    """A transformers config from a plain dict with ``model_type`` (as ``config.to_dict()`` writes it)."""
    from transformers import AutoConfig

    d = dict(d)
    model_type = d.pop("model_type", None)
    if model_type is None:
        raise ModelError("text.hf_config needs a 'model_type' (e.g. 'bert')")
    try:
        return AutoConfig.for_model(model_type, **d)
    except ValueError as e:
        raise ModelError(f"text.hf_config: {e}") from None


class HFTextTower(nn.Module):
    """A transformers encoder (``self.model``), pooled at the first token or averaged over tokens."""

    def __init__(self, cfg: TextTowerConfig, embed_dim: int) -> None:
        super().__init__()
        from transformers import AutoModel

        self.config = cfg
        if cfg.hf_path is not None:
            try:
                self.model = AutoModel.from_pretrained(
                    cfg.hf_path, local_files_only=True, attn_implementation="sdpa"
                )
            except OSError as e:
                raise ModelError(f"{cfg.hf_path}: cannot load a transformers model ({e})") from None
            if self.model.config.vocab_size != cfg.vocab_size:
                self.model.resize_token_embeddings(cfg.vocab_size)
        else:
            hf_cfg = hf_config_from_dict(
                {**cfg.hf_config, "vocab_size": cfg.vocab_size, "pad_token_id": cfg.pad_token_id}
            )
            self.model = AutoModel.from_config(hf_cfg, attn_implementation="sdpa")
        max_pos = getattr(self.model.config, "max_position_embeddings", None)
        if max_pos is not None and max_pos < cfg.context_length:
            raise ModelError(
                f"text: context_length {cfg.context_length} exceeds the encoder's {max_pos} positions"
            )
        width = self.model.config.hidden_size
        self.values = (
            ValueEmbedding(cfg.vocab_size, width, cfg.value_frequencies, cfg.value_scale)
            if cfg.value_embeddings
            else None
        )
        self.proj = nn.Linear(width, embed_dim, bias=cfg.proj_bias)
        self.output_dim = embed_dim
        if cfg.grad_checkpointing:
            self.set_grad_checkpointing(True)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        set_hf_checkpointing(self.model, enable)

    def forward_features(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.model.get_input_embeddings()(ids)
        if self.values is not None:
            x = x + self.values(ids)
        # transformers reads the mask's values (to skip an all-ones one), which meta tensors
        # lack; there, only shapes are wanted
        mask = None if ids.is_meta else (ids != self.config.pad_token_id).long()
        return self.model(inputs_embeds=x, attention_mask=mask).last_hidden_state

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(ids)
        if self.config.pool == "cls":
            return self.proj(x[:, 0])
        return self.proj(mean_over_tokens(x, ids, self.config.pad_token_id))


TEXT_TOWERS: Registry[Callable[[TextTowerConfig, int], nn.Module]] = Registry("text tower", ModelError)
TEXT_TOWERS["clip"] = ClipTextTower
TEXT_TOWERS["hf"] = HFTextTower


def build_text_tower(cfg: TextTowerConfig, embed_dim: int) -> nn.Module:
    return TEXT_TOWERS.get(cfg.kind)(cfg, embed_dim)
