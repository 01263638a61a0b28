"""Benchmark of the echo report tokenizer against open_clip's CLIP BPE and the EchoCLIP-R template design.

Trains EchoTokenizer on simulated reports (one seed), and measures on held-out
simulated reports (another seed), in one run, for each of the three tokenizers:
mean and 95th-percentile tokens per report (with the start and end tokens), share of
reports that fit in 77 tokens, and reports/s of batch encoding to ``[N, 77]`` ids on
one thread (CPU time of this process, best of ``--repeats`` passes; the first, cold
pass too). The template mode uses a phrase file learned from the same training corpus
(its 770 most frequent sentences, the size of the published one) and reports the share
of text it dropped; for reference, the token counts of the same design with every
sentence seen at least twice (the published design: a phrase for every template
sentence of the house). Because the template mode drops text, each tokenizer's
tokens per 100 non-space characters of the text it keeps are reported too. Prints
one JSON line; ``--save`` appends it to ``benchmarks/results/tokenizer.jsonl``.

    python benchmarks/bench_tokenizer.py --train 10000 --test 2000 --save
"""

from __future__ import annotations

import os

# one thread everywhere, before any of these libraries is imported
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import numpy as np  # noqa: E402
from machine import emit  # noqa: E402

if TYPE_CHECKING:
    from echoclip.tokenizer.echoclip_r import TemplateEncoding

RESULTS = Path(__file__).parent / "results" / "tokenizer.jsonl"


def length_stats(lengths: Sequence[int], context: int = 77) -> dict[str, float]:
    a = np.asarray(lengths)
    return {
        "mean_tokens": round(float(a.mean()), 2),
        "p95_tokens": round(float(np.percentile(a, 95)), 1),
        "fit_77": round(float(np.mean(a <= context)), 4),
    }


def dropped_share(encodings: Sequence[TemplateEncoding]) -> float:
    """Share of the (non-space) report text that the template mode dropped."""
    return round(sum(e.dropped_chars for e in encodings) / max(1, sum(e.total_chars for e in encodings)), 4)


def tokens_per_100_kept_chars(tokens: Sequence[int], kept_chars: Sequence[int]) -> float:
    """Tokens spent per 100 non-space characters of text kept: a lossy tokenizer is short partly because it drops text."""
    return round(100 * sum(tokens) / max(1, sum(kept_chars)), 2)


def speed(encode: Callable[[list[str]], object], texts: list[str], repeats: int) -> dict[str, float]:
    """Reports/s of ``encode(texts)``: the first (cold) pass and the best of ``repeats`` by CPU time, and wall time."""
    encode(["LV EJECTION FRACTION IS 55%."])  # one-time set-up is not encoding
    timings = []
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        encode(texts)
        timings.append((time.process_time() - cpu, time.perf_counter() - wall))
    best_cpu = min(t[0] for t in timings)
    best_wall = min(t[1] for t in timings)
    return {
        "reports_per_s": round(len(texts) / best_cpu),
        "reports_per_s_cold": round(len(texts) / timings[0][0]),
        "reports_per_s_wall": round(len(texts) / best_wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=10_000, help="training reports (seed --train-seed)")
    parser.add_argument("--test", type=int, default=2_000, help="held-out reports (seed --test-seed)")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--test-seed", type=int, default=123_456)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--save", action="store_true", help=f"append the JSON line to {RESULTS}")
    args = parser.parse_args()

    import open_clip
    import torch
    from open_clip.tokenizer import SimpleTokenizer

    from echoclip.data.synthetic import simulate_reports
    from echoclip.tokenizer import EchoClipRTokenizer, EchoTokenizer
    from echoclip.tokenizer.echoclip_r import learn_phrase_file

    torch.set_num_threads(1)
    corpus = simulate_reports(args.train, seed=args.train_seed)
    held_out = simulate_reports(args.test, seed=args.test_seed)

    start = time.process_time()
    ours = EchoTokenizer.train(corpus)
    train_s = time.process_time() - start
    lossless_failures = sum(ours.decode(ours.encode(r)) != ours.clean(r) for r in corpus + held_out)
    ours_lengths = [len(ids) + 2 for ids in ours.encode_batch(held_out)]
    ours_chars = [len(ours.clean(r).replace(" ", "")) for r in held_out]

    clip_bpe = SimpleTokenizer()
    clip = open_clip.get_tokenizer("ViT-B-32")
    clip_lengths = [len(clip_bpe.encode(r)) + 2 for r in held_out]

    with tempfile.TemporaryDirectory() as tmp:
        template = EchoClipRTokenizer(learn_phrase_file(corpus, Path(tmp) / "phrases.txt", min_frequency=5))
        # the same design with every sentence seen twice: it drops less, and needs more tokens
        every = EchoClipRTokenizer(
            learn_phrase_file(corpus, Path(tmp) / "all.txt", min_frequency=2, max_phrases=10**6)
        )
    template_stats = [template.encode_with_stats(r) for r in held_out]
    every_stats = [every.encode_with_stats(r) for r in held_out]
    template_lengths = [len(e.ids) for e in template_stats]
    every_lengths = [len(e.ids) for e in every_stats]

    result = {
        "benchmark": "tokenizer",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or platform.platform()}), "
        f"load {os.getloadavg()[0]:.1f}",
        "train_reports": args.train,
        "held_out_reports": args.test,
        "report_chars_mean": round(float(np.mean([len(r) for r in held_out])), 1),
        "echoclip": {
            **length_stats(ours_lengths),
            "tokens_per_100_kept_chars": tokens_per_100_kept_chars(ours_lengths, ours_chars),
            **speed(lambda t: ours(t, context_length=77), held_out, args.repeats),
            "vocab_size": ours.vocab_size,
            "train_cpu_s": round(train_s, 1),
            "lossless_failures": lossless_failures,
            "lossless_checked": len(corpus) + len(held_out),
        },
        "clip_bpe": {**length_stats(clip_lengths), **speed(clip, held_out, min(args.repeats, 2))},
        "echoclip_r_style": {
            **length_stats(template_lengths),
            "tokens_per_100_kept_chars": tokens_per_100_kept_chars(
                template_lengths, [e.total_chars - e.dropped_chars for e in template_stats]
            ),
            **speed(template, held_out, min(args.repeats, 2)),
            "phrases": template.phrase_vocab_size - 5,
            "dropped_share": dropped_share(template_stats),
        },
        "echoclip_r_style_all_sentences": {
            **length_stats(every_lengths),
            "tokens_per_100_kept_chars": tokens_per_100_kept_chars(
                every_lengths, [e.total_chars - e.dropped_chars for e in every_stats]
            ),
            "phrases": every.phrase_vocab_size - 5,
            "dropped_share": dropped_share(every_stats),
        },
    }
    e, c, r = result["echoclip"], result["clip_bpe"], result["echoclip_r_style"]
    every_r = result["echoclip_r_style_all_sentences"]
    result["ratios"] = {
        "tokens_vs_clip_bpe": round(e["mean_tokens"] / c["mean_tokens"], 3),
        "tokens_vs_echoclip_r_style": round(e["mean_tokens"] / r["mean_tokens"], 3),
        "tokens_vs_echoclip_r_style_all_sentences": round(e["mean_tokens"] / every_r["mean_tokens"], 3),
        "tokens_per_kept_char_vs_echoclip_r_style": round(
            e["tokens_per_100_kept_chars"] / r["tokens_per_100_kept_chars"], 3
        ),
        "speed_vs_clip_bpe": round(e["reports_per_s"] / c["reports_per_s"], 1),
        "speed_vs_echoclip_r_style": round(e["reports_per_s"] / r["reports_per_s"], 1),
    }
    emit(result, RESULTS if args.save else None)


if __name__ == "__main__":
    main()
