"""Models: named configs, video and report towers, the EchoCLIP model, model directories.

- ``config``: JSON configs (``configs/models/*.json``) as frozen dataclasses.
- ``factory``: ``list_models``, ``create_model``, ``create_model_and_transforms``,
  ``load_model``, ``get_tokenizer``, ``add_model_config``, ``get_model_config``.
- ``video_towers`` (registry) with ``frames``, ``videomae`` and ``torchvision_towers``;
  ``text_towers`` with ``value_embedding``.
- ``clip_model``: :class:`EchoCLIP`; ``model_dir``: saving and loading model directories.
- ``open_clip_compat``: the published EchoCLIP checkpoints; ``echoprime_compat``: EchoPrime's
  released checkpoints (video and text encoders, view classifier, section x view table);
  ``view_classifier``: views from a clip's first frame; ``embed``: batch embeddings.
- ``study_encoder``: study poolings by name (``mean``, ``echoprime``, ``attention``) behind
  :meth:`EchoCLIP.encode_study`.

Nothing is imported here, so ``import echoclip.models`` stays free of torch.
"""
