"""The BPE model under EchoTokenizer: characters, byte fallback, subword merges, phrase merges.

The model sees only the text *between* value tokens (a "stretch", e.g.
``%. NORMAL REGIONAL WALL MOTION. LV WALL THICKNESS IS ``) and encodes each stretch
as a whole, without splitting it into words first. Its vocabulary:

- ``<pad>`` (id 0) and the 256 byte tokens ``<0x00>`` ... ``<0xFF>``: a character
  that is not in the vocabulary is written as its UTF-8 bytes (byte fallback), so
  no text is ever lost;
- the printable ASCII characters and every other character of the corpus;
- subword merges, learned as usual within words (stage 1);
- phrase merges, learned on top of the subwords across word boundaries inside
  stretches (stage 2): a frequent sentence such as ``NORMAL REGIONAL WALL MOTION. ``
  ends as one token. Because the stage-2 merges rank after every stage-1 merge, a
  stretch is first cut into subwords and then into phrases, as in training.

Stage 2 runs the Rust BPE trainer on the stage-1 tokens, each written as one
private-use character, so that a "character merge" there is a token merge here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
ASCII = tuple(chr(i) for i in range(32, 127))
# stage 1 cuts a stretch into words with their leading space, numbers and punctuation runs
_WORDS = r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+"
# a merged token must not read like a byte or special token, or decoding would turn it into one
_RESERVED = re.compile(r"<0x[0-9A-F]{2}>|<pad>|<bos>|<eos>")
# private-use code points stand for stage-1 tokens during stage 2
_PUA = (0xF0000, 0x10FFFE)


def bpe_model(
    vocab: dict[str, int], merges: Sequence[tuple[str, str]], cache_capacity: int = 10_000
) -> models.BPE:
    return models.BPE(
        vocab=vocab,
        merges=list(merges),
        byte_fallback=True,
        # not True: a stretch that is exactly "<0x41>" or "<pad>" would become that token
        ignore_merges=False,
        cache_capacity=cache_capacity,
    )


def base_vocab(alphabet: Sequence[str] = ()) -> dict[str, int]:
    """``<pad>``, the byte tokens, printable ASCII and ``alphabet``, in this order."""
    vocab = {PAD: 0}
    for token in (*BYTE_TOKENS, *ASCII, *alphabet):
        vocab.setdefault(token, len(vocab))
    return vocab


def tokenizer(
    vocab: dict[str, int], merges: Sequence[tuple[str, str]], cache_capacity: int = 10_000
) -> Tokenizer:
    """A tokenizer that encodes a whole stretch with the model (no pre-tokenizer) and decodes losslessly."""
    tok = Tokenizer(bpe_model(vocab, merges, cache_capacity))
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return tok


def model_state(tok: Tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a tokenizer's BPE model."""
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], merge_pairs(model["merges"])


def merge_pairs(merges: Sequence[Sequence[str] | str]) -> list[tuple[str, str]]:
    """Merges as saved in tokenizer.json (pairs, or "a b" strings in older files) as pairs."""
    return [(m[0], m[1]) if not isinstance(m, str) else tuple(m.split(" ", 1)) for m in merges]


def learn_subwords(stretches: Sequence[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    """Stage 1: a BPE of about ``vocab_size`` merges learned within the words of the stretches."""
    trainer = trainers.BpeTrainer(
        vocab_size=len(base_vocab()) + vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=[PAD, *BYTE_TOKENS],
        initial_alphabet=list(ASCII),
    )
    learner = Tokenizer(models.BPE(byte_fallback=True))
    learner.pre_tokenizer = pre_tokenizers.Split(Regex(_WORDS), behavior="isolated")
    learner.train_from_iterator(stretches, trainer=trainer)
    vocab, merges = model_state(learner)
    # the trainer numbers its alphabet freely: renumber it after the fixed base tokens
    alphabet = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if len(t) == 1]
    out = base_vocab(alphabet)
    for a, b in merges:
        out.setdefault(a + b, len(out))
    return tokenizer(out, merges)


def learn_phrases(
    stretches: Sequence[str], subwords: Tokenizer, vocab_size: int, min_frequency: int, max_length: int = 64
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Stage 2: add up to ``vocab_size`` merges of subword tokens across words; returns the final vocab and merges.

    ``max_length`` bounds a phrase in subword tokens.
    """
    vocab, merges = model_state(subwords)
    if vocab_size <= 0:
        return vocab, merges
    id_to_token = {i: t for t, i in vocab.items()}
    symbol = {i: chr(_PUA[0] + i) for i in id_to_token}
    if len(symbol) > _PUA[1] - _PUA[0]:
        raise ValueError("the subword vocabulary is too large for phrase learning")
    sequences = ["".join(symbol[i] for i in e.ids) for e in subwords.encode_batch_fast(list(stretches))]
    trainer = trainers.BpeTrainer(
        vocab_size=len(symbol) + vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=list(symbol.values()),
        max_token_length=max_length,
    )
    learner = Tokenizer(models.BPE())
    learner.train_from_iterator([s for s in sequences if len(s) > 1] or [""], trainer=trainer)
    _, symbol_merges = model_state(learner)

    def text(symbols: str) -> str:
        return "".join(id_to_token[ord(c) - _PUA[0]] for c in symbols)

    known = set(vocab)
    seen = set(merges)
    for a, b in symbol_merges:
        pair = (text(a), text(b))
        merged = pair[0] + pair[1]
        # a merge is usable only if its parts are tokens (a dropped merge drops those built on it)
        if pair in seen or pair[0] not in known or pair[1] not in known or _RESERVED.search(merged):
            continue
        seen.add(pair)
        merges.append(pair)
        if merged not in vocab:
            vocab[merged] = len(vocab)
        known.add(merged)
    return vocab, merges
