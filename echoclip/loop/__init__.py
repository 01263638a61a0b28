"""The generic training loop: what every training run shares, and nothing of what it trains.

:class:`~echoclip.loop.trainer.Trainer` runs an objective (contrastive training,
self-supervised pretraining, fine-tuning) under ``torchrun`` (DDP or FSDP) with AdamW, a
cosine schedule, gradient accumulation, bf16 autocast, atomic checkpoints and exact
resume; :class:`~echoclip.loop.config.LoopConfig` holds its settings. Objectives live
in the packages that use the loop (``echoclip.train``, ``echoclip.pretrain``,
``echoclip.finetune``); this package imports none of them.
"""
