"""EchoTokenizer: compact, lossless and fast tokenization of echo reports.

A report is cleaned (:mod:`.cleaning`), then tokenized by a ``tokenizers`` (Rust)
pipeline that is saved as one ``tokenizer.json``:

1. value tokens (:mod:`.values`: integers 0-100, decimals and severity words, each a
   whole number or word) and the placeholders ``<DATE>``/``<ID>`` are matched first,
   as added tokens;
2. each stretch of text between them is encoded as a whole by a BPE model
   (:mod:`.bpe`) whose merges were learned in two stages on the same kind of
   stretches: subwords within words, then phrases across words, so that a frequent
   sentence is one token; a character the model does not know is written as its
   UTF-8 bytes (byte fallback), so that no text is ever lost:
   ``decode(encode(x)) == clean(x)`` for every string ``x``.

Speed: cleaning is a few compiled patterns per report. ASCII text (nearly every
report) is then split at the value tokens by one compiled regular expression and
each stretch is looked up in a cache (:mod:`.stretches`), which gives the ids of the
Rust pipeline at about twice its speed; other text goes through the pipeline.
Phrases (fewer tokens) make both paths faster. ``__call__`` pads and truncates in
NumPy, cheaper than the Rust post-processor.

Id layout: ``<pad>`` is 0 (open_clip pads with 0), the 256 byte tokens 1-256, then
characters, subword and phrase tokens, the value tokens and placeholders, and
``<bos>``, ``<eos>`` last: the end token has the largest id, so text towers that
pool at ``argmax(ids)`` (as open_clip's does) find it. The special tokens are lower
case and cannot occur in upper-cased text; with upper-casing switched off, this class
still encodes a literal ``<eos>`` in a report as text.

``tokenizer.json`` carries the cleaning as its normalizer (and the value tokens as
added tokens matched after it), so ``tokenizers.Tokenizer.from_file``,
``transformers.PreTrainedTokenizerFast(tokenizer_file=...)`` and
``transformers.AutoTokenizer.from_pretrained(dir)`` give the ids of this class on raw
reports: ``<bos>``, the ids of :meth:`EchoTokenizer.encode`, ``<eos>`` (what
``add_special_tokens=True``, their default, adds). ``save`` also writes
``tokenizer_config.json`` (the class ``PreTrainedTokenizerFast``, special tokens,
context length and the cleaning options). In memory the pipeline has no normalizer:
this class cleans first, ASCII text in Python (:class:`~.cleaning.Cleaner`), and
encodes the cleaned text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import AddedToken, Tokenizer, models, processors

from . import bpe
from .cleaning import PLACEHOLDER_TOKENS, Cleaner, CleaningConfig
from .errors import TokenizerError
from .stretches import StretchEncoder
from .values import DECIMALS, FRACTIONS, INTEGERS, expand_template, number_tokens, severity_tokens

if TYPE_CHECKING:
    import torch

PAD, BOS, EOS = bpe.PAD, bpe.BOS, bpe.EOS
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
FORMAT = "echoclip-tokenizer-1"
CACHE_CAPACITY = 100_000  # stretches remembered by the model (tens of MB when full)


def _add_vocabulary(tok: Tokenizer, cleaning: CleaningConfig) -> None:
    """Add the value tokens and placeholders as added tokens.

    Whole numbers and severity words match only between non-word characters
    (``single_word``): ``100`` in ``1000`` is not a value. Fractions (``.5``) must match
    right after an integer (``12.5``).
    """
    whole = [*INTEGERS, *DECIMALS, *severity_tokens(cleaning.uppercase)]
    tok.add_tokens([AddedToken(s, single_word=True, normalized=False) for s in whole])
    anywhere = [*FRACTIONS, *PLACEHOLDER_TOKENS]
    tok.add_tokens([AddedToken(s, single_word=False, normalized=False) for s in anywhere])


def _finish(tok: Tokenizer) -> Tokenizer:
    """Add ``<bos>``/``<eos>`` as the last ids and the template that wraps every text in them."""
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in (BOS, EOS)])
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B:1 {EOS}:1",
        special_tokens=[(BOS, bos), (EOS, eos)],
    )
    return tok


def _check_texts(texts: object) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if texts is None or isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a str or a sequence of str, not {type(texts).__name__}")
    return list(texts)


class EchoTokenizer:
    """Tokenizer for echo reports (see the module docstring for the design).

    >>> tok = EchoTokenizer.train(reports)          # or EchoTokenizer() untrained
    >>> ids = tok(["LV EJECTION FRACTION IS 55%."])  # LongTensor [1, 77]
    >>> tok.decode(tok.encode("lv ejection fraction is 55 %")) == tok.clean("lv ejection fraction is 55 %")
    True
    """

    def __init__(self, backend: Tokenizer | None = None, cleaning: CleaningConfig | None = None) -> None:
        """``backend`` is the pipeline of cleaned text; one with a normalizer (a saved file) cleans with it."""
        cleaning = cleaning or CleaningConfig()
        if backend is None:
            backend = bpe.tokenizer(bpe.base_vocab(), [])
            _add_vocabulary(backend, cleaning)
            _finish(backend)
        missing = [t for t in (PAD, BOS, EOS) if backend.token_to_id(t) is None]
        if missing:
            raise TokenizerError(
                f"the tokenizer has no {', '.join(missing)} token: not an echoclip tokenizer"
            )
        self.cleaning = cleaning
        self._clean = Cleaner(cleaning, normalizer=backend.normalizer)
        self._backend = _prepared(backend)
        self._fast = StretchEncoder.for_backend(self._backend, CACHE_CAPACITY)
        self.pad_token_id: int = backend.token_to_id(PAD)
        self.bos_token_id: int = backend.token_to_id(BOS)
        self.eos_token_id: int = backend.token_to_id(EOS)
        self._special_ids = frozenset((self.pad_token_id, self.bos_token_id, self.eos_token_id))
        self._longest: int | None = None

    # ------------------------------------------------------------------ training

    @classmethod
    def train(
        cls,
        corpus: Iterable[str],
        phrase_vocab_size: int = 8192,
        subword_vocab_size: int = 2048,
        min_frequency: int = 3,
        cleaning: CleaningConfig | None = None,
        phrase_min_frequency: int | None = None,
    ) -> EchoTokenizer:
        """Learn the subword and phrase merges of the model from a corpus of reports.

        ``subword_vocab_size``: about this many subword tokens (merges within words);
        ``phrase_vocab_size``: at most this many phrase tokens (merges of subwords across
        words); ``min_frequency``: a merge must occur at least this often in the corpus;
        ``phrase_min_frequency``: the same for phrase merges (default ``min_frequency``).

        A phrase token is a word of its own to the text tower. On a corpus of a few
        hundred reports, a sentence seen a dozen times ("ECHOGENIC PACER WIRE IN THE RA
        AND RV.") would become one rare token that shares nothing with the other
        phrasings of the same finding; a higher ``phrase_min_frequency`` keeps such
        sentences as their words ("PACER", "WIRE") and merges only the common ones.
        """
        if phrase_min_frequency is None:
            phrase_min_frequency = min_frequency
        for name, value, low in (
            ("phrase_vocab_size", phrase_vocab_size, 0),
            ("subword_vocab_size", subword_vocab_size, 0),
            ("min_frequency", min_frequency, 1),
            ("phrase_min_frequency", phrase_min_frequency, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        cleaning = cleaning or CleaningConfig()
        clean = Cleaner(cleaning)
        texts = [clean(t) for t in _check_texts(corpus)]
        if not any(texts):
            raise TokenizerError("cannot train a tokenizer on an empty corpus")

        # The model learns exactly what it will see when encoding: the stretches between
        # value tokens, found by the same added tokens on a model with one unknown token.
        splitter = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
        _add_vocabulary(splitter, cleaning)
        stretches = [
            text[start:end]
            for text, enc in zip(texts, splitter.encode_batch(texts, add_special_tokens=False), strict=True)
            for token_id, (start, end) in zip(enc.ids, enc.offsets, strict=True)
            if token_id == 0
        ]
        subwords = bpe.learn_subwords(stretches, subword_vocab_size, min_frequency)
        vocab, merges = bpe.learn_phrases(stretches, subwords, phrase_vocab_size, phrase_min_frequency)
        backend = bpe.tokenizer(vocab, merges)
        _add_vocabulary(backend, cleaning)
        return cls(_finish(backend), cleaning)

    # ------------------------------------------------------------------ files

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``directory``; returns the tokenizer.json path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": PAD,
            "model_max_length": 77,
            "clean_up_tokenization_spaces": False,
            "split_special_tokens": True,
            "echoclip": {"format": FORMAT, "cleaning": self.cleaning.to_dict()},
        }
        _write_atomic(directory / TOKENIZER_FILE, self.to_str(pretty=True))
        _write_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2))
        return directory / TOKENIZER_FILE

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EchoTokenizer:
        """Load from a directory written by :meth:`save`, or from a ``tokenizer.json`` file.

        The cleaning options come from ``tokenizer_config.json`` next to it; without
        that file the default cleaning is used.
        """
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise TokenizerError(f"{file}: no such tokenizer file")
        try:
            backend = Tokenizer.from_file(str(file))
        except Exception as e:  # the Rust loader raises a bare Exception
            raise TokenizerError(f"{file}: not a valid tokenizer.json ({e})") from None
        cleaning = CleaningConfig()
        config_file = file.with_name(CONFIG_FILE)
        if config_file.is_file():
            try:
                options = json.loads(config_file.read_text(encoding="utf-8")).get("echoclip", {})
                cleaning = CleaningConfig.from_dict(options.get("cleaning", {}))
            except (ValueError, AttributeError, TypeError) as e:
                raise TokenizerError(f"{config_file}: invalid tokenizer config ({e})") from None
        try:
            return cls(backend, cleaning)
        except TokenizerError as e:
            raise TokenizerError(f"{file}: {e}") from None

    # ------------------------------------------------------------------ encoding

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> Tokenizer:
        """The ``tokenizers.Tokenizer`` that encodes cleaned text (``tokenizer.json`` adds the cleaning to it)."""
        return self._backend

    def to_str(self, pretty: bool = False) -> str:
        """The JSON of ``tokenizer.json``: the pipeline with the cleaning as its normalizer.

        The value tokens and placeholders are matched after the normalizer there
        (``normalized``), as they are matched in cleaned text here.
        """
        with_cleaning = Tokenizer.from_str(self._backend.to_str())
        with_cleaning.normalizer = self._clean.normalizer()
        data = json.loads(with_cleaning.to_str())
        for token in data["added_tokens"]:
            token["normalized"] = not token["special"]
        return Tokenizer.from_str(json.dumps(data)).to_str(pretty=pretty)

    def clean(self, text: str) -> str:
        """The text the tokenizer actually encodes (see :mod:`echoclip.tokenizer.cleaning`)."""
        return self._clean(text)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of one report (without ``<bos>``/``<eos>`` unless asked for); never truncated."""
        return self.encode_batch([text], add_special_tokens)[0]

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        """Token ids of many reports, without padding or truncation."""
        batch = self._encode_cleaned(self._clean_all(_check_texts(texts)))
        if add_special_tokens:
            batch = [[self.bos_token_id, *ids, self.eos_token_id] for ids in batch]
        return batch

    def decode(self, ids: Sequence[int] | Any) -> str:
        """The cleaned text of ``ids`` (a list or a 1-D tensor/array); padding, ``<bos>`` and ``<eos>`` are skipped."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        ids = list(ids)
        if ids and isinstance(ids[0], list):
            raise TypeError("decode takes one sequence of ids; use decode_batch for a batch")
        return self._backend.decode([i for i in ids if i not in self._special_ids], skip_special_tokens=False)

    def decode_batch(self, batch: Sequence[Sequence[int]] | Any) -> list[str]:
        """:meth:`decode` for each row of a batch (e.g. the output of ``__call__``)."""
        if hasattr(batch, "tolist"):
            batch = batch.tolist()
        return [self.decode(row) for row in batch]

    def tokens(self, text: str) -> list[str]:
        """The text of each token of a cleaned report, for display (a byte of a longer character shows as '�')."""
        return [self._backend.decode([i]) for i in self.encode(text)]

    def __call__(self, texts: str | Sequence[str], context_length: int = 77) -> torch.Tensor:
        """``LongTensor [B, context_length]``: ``<bos>``, the tokens, ``<eos>``, then ``<pad>`` (0).

        A longer report is truncated and keeps its ``<eos>``, as open_clip's tokenizer does.
        """
        return self.tokenize(texts, context_length)["input_ids"]

    def tokenize(self, texts: str | Sequence[str], context_length: int = 77) -> dict[str, torch.Tensor]:
        """``{"input_ids": LongTensor [B, L], "attention_mask": LongTensor [B, L]}`` (1 on real tokens)."""
        import numpy as np
        import torch

        if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
            raise ValueError(
                f"context_length must be an integer >= 2 (room for <bos> and <eos>), got {context_length!r}"
            )
        cleaned = self._clean_all(_check_texts(texts))
        # A token never spans more characters than the longest token, so text beyond
        # `limit` characters cannot reach the kept tokens; cutting it (at a space) keeps
        # a 1 MB report as fast as a normal one.
        limit = (context_length + 2) * self._longest_token_chars()
        cleaned = [t if len(t) <= limit else _cut(t, limit) for t in cleaned]
        # <bos>, the tokens cut to fit, <eos>, then padding: the end token is always kept
        ids = np.full((len(cleaned), context_length), self.pad_token_id, dtype=np.int64)
        ids[:, 0] = self.bos_token_id
        keep = context_length - 2
        for row, encoded in enumerate(self._encode_cleaned(cleaned)):
            tokens = encoded[:keep]
            ids[row, 1 : len(tokens) + 1] = tokens
            ids[row, len(tokens) + 1] = self.eos_token_id
        input_ids = torch.from_numpy(ids)
        return {"input_ids": input_ids, "attention_mask": (input_ids != self.pad_token_id).long()}

    # ------------------------------------------------------------------ values and prompts

    def value_token_values(self) -> dict[int, float]:
        """Token id -> numeric value, for every number token (integers 0-100, decimals, fractions)."""
        return self._ids_of(number_tokens())

    def severity_token_values(self) -> dict[int, float]:
        """Token id -> ordinal value (MILD 1 ... SEVERE 3), for the severity words."""
        return self._ids_of(severity_tokens(self.cleaning.uppercase))

    @staticmethod
    def expand_template(template: str, values: Iterable[object]) -> list[str]:
        """One prompt per value, ``<#>`` replaced (see :func:`echoclip.tokenizer.values.expand_template`)."""
        return expand_template(template, values)

    def __repr__(self) -> str:
        return f"EchoTokenizer(vocab_size={self.vocab_size}, uppercase={self.cleaning.uppercase})"

    def __reduce__(self) -> tuple[Any, ...]:
        # for data-loader workers: rebuilt from its JSON, with the large word cache; with the
        # normalizer only where it is at hand (built, or loaded), else a worker builds its own
        state = self.to_str() if self._clean.has_normalizer else self._backend.to_str()
        return (_from_json, (state, self.cleaning.to_dict()))

    # ------------------------------------------------------------------ internals

    def _ids_of(self, tokens: dict[str, float]) -> dict[int, float]:
        out = {}
        for token, value in tokens.items():
            token_id = self._backend.token_to_id(token)
            if token_id is not None:
                out[token_id] = value
        return out

    def _clean_all(self, texts: list[Any]) -> list[str]:
        try:
            return [self._clean(t) for t in texts]
        except TypeError:
            bad = next(i for i, t in enumerate(texts) if not isinstance(t, str))
            raise TypeError(f"texts[{bad}] must be str, not {type(texts[bad]).__name__}") from None

    def _encode_cleaned(self, cleaned: list[str]) -> list[list[int]]:
        """Ids of cleaned texts: ASCII ones by the stretch encoder, the rest by the Rust pipeline."""
        fast = self._fast
        others = [t for t in cleaned if fast is None or not t.isascii()]
        encoded = iter(self._backend.encode_batch_fast(others, add_special_tokens=False) if others else ())
        return [fast.encode(t) if fast is not None and t.isascii() else next(encoded).ids for t in cleaned]

    def _longest_token_chars(self) -> int:
        # a byte token spans part of one character, every other token its own text
        if self._longest is None:
            self._longest = max(len(token) for token in self._backend.get_vocab(with_added_tokens=True))
        return self._longest


def _from_json(backend: str, cleaning: dict[str, Any]) -> EchoTokenizer:
    return EchoTokenizer(Tokenizer.from_str(backend), CleaningConfig.from_dict(cleaning))


def _prepared(tok: Tokenizer) -> Tokenizer:
    """Check that ``tok`` is an EchoTokenizer pipeline, make it one of cleaned text, and give its model a large word cache.

    Cleaned text needs no normalizer, and its added tokens match it as it is. The
    cache (which ``tokenizer.json`` does not store) remembers the tokens of each
    stretch between values; reports repeat their stretches, so most are found there.
    """
    data = json.loads(tok.to_str())
    model = data["model"]
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise TokenizerError("the tokenizer model is not a byte-fallback BPE: not an echoclip tokenizer")
    if data.get("normalizer") is not None or any(t["normalized"] for t in data["added_tokens"]):
        data["normalizer"] = None
        for token in data["added_tokens"]:
            token["normalized"] = False
        tok = Tokenizer.from_str(json.dumps(data))
    tok.model = bpe.bpe_model(model["vocab"], bpe.merge_pairs(model["merges"]), cache_capacity=CACHE_CAPACITY)
    # a literal "<eos>" in a report is text (it cannot occur at all in upper-cased text)
    tok.encode_special_tokens = True
    return tok


def _cut(text: str, limit: int) -> str:
    space = text.rfind(" ", limit // 2, limit)
    return text[: space if space > 0 else limit]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
