"""A small, deterministic video-text model and data set for testing the training loop.

It has the surface of ``EchoCLIP`` (``encode_video``, ``encode_text``, ``forward``,
``save_pretrained``) and learns quickly: the colour and position of a bright patch in
each clip encode its class, each report names the class.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

WORDS = ["RED", "GREEN", "BLUE", "GREY", "DARK", "BRIGHT", "NORMAL", "SEVERE"]


def toy_tokenizer(texts, context_length: int = 8) -> torch.Tensor:
    if isinstance(texts, str):
        texts = [texts]
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [WORDS.index(w) + 1 for w in t.replace(".", " ").split() if w in WORDS][:context_length]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def blank_tokenizer(texts, context_length: int = 8) -> torch.Tensor:
    """All-padding token ids: for tests of which sentences a batch holds, not of what they say."""
    return torch.zeros(len(texts), 4, dtype=torch.long)


def toy_objective(val_dataset=None, **fields):
    """A contrastive objective over the toy tokenizer; ``fields`` of its ContrastiveConfig."""
    from echoclip.train.config import ContrastiveConfig
    from echoclip.train.contrastive import ContrastiveObjective

    config = ContrastiveConfig(context_length=8, sentence_dropout=0.3, **fields)
    return ContrastiveObjective(toy_tokenizer, config, val_dataset=val_dataset)


def toy_config(tmp_path, **kw):
    """A short run of the toy model: 12 steps of 8 clips, a checkpoint every 4."""
    from echoclip.train.config import TrainConfig

    base = dict(
        out=str(tmp_path / "run"),
        steps=12,
        batch_size=8,
        lr=3e-2,
        warmup_steps=2,
        checkpoint_every=4,
        log_every=1,
        tensorboard=False,
        progress=False,
        seed=3,
    )
    base.update(kw)
    return TrainConfig.from_dict(base)


class ToyClip(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.video = nn.Sequential(nn.Linear(48, 32), nn.GELU(), nn.Linear(32, dim))
        self.embed = nn.Embedding(len(WORDS) + 1, 32, padding_idx=0)
        self.text = nn.Linear(32, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def encode_video(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = self.video(x.mean(dim=2).flatten(1))
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(self, ids: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        mask = (ids > 0).float().unsqueeze(-1)
        pooled = (self.embed(ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        f = self.text(pooled)
        return F.normalize(f, dim=-1) if normalize else f

    def forward(self, video: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "video_features": self.encode_video(video, normalize=True),
            "text_features": self.encode_text(text, normalize=True),
            "logit_scale": self.logit_scale.exp(),
        }

    def save_pretrained(self, directory, tokenizer=None) -> None:
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self, str(directory / "model.safetensors"))


class ToyClips(Dataset):
    """Clips of eight classes (a bright patch: channel and row), with a report naming the class."""

    def __init__(self, n: int = 48, seed: int = 0, bad: set[int] | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.classes = torch.randint(0, len(WORDS), (n,), generator=g)
        self.noise = torch.randn(n, 3, 2, 4, 4, generator=g) * 0.1
        self.bad = bad or set()
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, i: int):
        if i in self.bad:
            self.skipped.append(f"clip{i}.avi: unreadable")
            return None
        c = int(self.classes[i])
        video = self.noise[i].clone()
        video[c % 3, :, c // 3] += 1.0
        return {
            "video": video,
            "report": f"{WORDS[c]} CLIP. {WORDS[c]} PATCH. {WORDS[c]}.",
            "index": i,
            "ef": float(20 * c + 30),
        }
