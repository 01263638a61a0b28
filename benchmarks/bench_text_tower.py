"""Text tower work of one CLIP training step: rows grouped by length against one padded call.

Prints one JSON line: the seconds of forward and backward through ``echoclip-tiny``'s
text tower for the texts one step of the demo's recipe encodes (40 reports after
sentence dropout, 128 of their sentences, 10 numeric sentences with 6 shifted copies
each, from simulated reports and a tokenizer trained on them), once with the batch split
into groups of similar length (the default) and once as one call padded to the longest
row (the baseline), alternating in the same process; and the ratio of the two.

    python benchmarks/bench_text_tower.py [--steps 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="training steps' texts per timing (at most 24)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (the best of each is kept)")
    args = parser.parse_args()

    import torch

    from echoclip.data.synthetic import simulate_reports
    from echoclip.demo import DemoRecipe
    from echoclip.models.factory import create_model
    from echoclip.tokenizer import EchoTokenizer
    from echoclip.train.contrastive import ContrastiveObjective

    torch.manual_seed(0)
    reports = simulate_reports(1000, seed=0)
    recipe = DemoRecipe.load("demo-small")  # the demo's recipe, so that the texts are those its steps encode
    tok = EchoTokenizer.train(reports, phrase_min_frequency=recipe.phrase_min_frequency)
    model = create_model("echoclip-tiny", tokenizer=tok).train()
    objective = ContrastiveObjective(tok, recipe.contrastive, seed=0)
    batches = []
    n = recipe.train.batch_size
    for k in range(args.steps + 1):
        samples = [
            {"report": reports[i], "video": torch.zeros(1), "index": i} for i in range(k * n, k * n + n)
        ]
        batch = objective.collate(samples, 0)
        batches.append([batch["text"], batch["sentences"], batch["value_variants"].flatten(0, 1)])

    def run(texts: list[torch.Tensor]) -> None:
        sum(model.encode_text(ids, normalize=True).sum() for ids in texts).backward()
        model.zero_grad(set_to_none=True)

    tower = model.text_tower
    best = {"grouped": float("inf"), "one_call": float("inf")}
    for _ in range(args.rounds):
        for name, groups in (("grouped", 4), ("one_call", 1)):
            tower.max_length_groups = groups
            run(batches[0])
            t = time.perf_counter()
            for texts in batches[1:]:
                run(texts)
            best[name] = min(best[name], (time.perf_counter() - t) / args.steps)
    tokens = sum(int((ids != tok.pad_token_id).sum()) for texts in batches[1:] for ids in texts) / args.steps
    print(
        json.dumps(
            {
                "benchmark": "text_tower",
                "date": date.today().isoformat(),
                "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__.split('+')[0]}",
                "rows_per_step": sum(len(ids) for ids in batches[1]),
                "tokens_per_step": round(tokens),
                "grouped_s_per_step": round(best["grouped"], 4),
                "one_call_s_per_step": round(best["one_call"], 4),
                "grouped_vs_one_call": round(best["grouped"] / best["one_call"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
