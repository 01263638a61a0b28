"""The formats of the folders echoclip saves, each named by a ``format`` field in one JSON file.

One table, so that every writer records its format and one reader
(:func:`echoclip.models.encoders.read_format`) tells them apart by that field rather
than by which files a folder happens to hold.
"""

from __future__ import annotations

MODEL = "echoclip-model"  # a model directory: config, weights, preprocessing, tokenizer
ENCODER = "echoclip-encoder"  # the video tower of `echoclip pretrain`
FINETUNED = "echoclip-finetuned"  # an encoder with a task head (`echoclip finetune`)
CHECKPOINT = "echoclip-checkpoint"  # a training checkpoint; its model/ holds one of the above
# a file, not a folder: a model directory's ood.safetensors names it in its metadata
OOD_REFERENCE = "echoclip-ood-reference"

# format -> the JSON file whose "format" field names it
FORMAT_FILES: dict[str, str] = {
    MODEL: "config.json",
    ENCODER: "encoder.json",
    FINETUNED: "finetune.json",
    CHECKPOINT: "checkpoint.json",
}
