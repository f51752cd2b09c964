"""The centralized peer: one model, one epoch over every training row per "round", the test split after each.

Each FedAvg round of the workload touches every training row once, so an epoch is the same work without any
federation: the lower bound our engines' round times are compared with. Run as a script (no ``consortium``
needed): ``python centralized.py --rounds 10 --out result.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    started = time.perf_counter()
    threads = workload.set_threads()
    x_train, y_train = workload.digits()[:2]
    model = workload.initial_model()
    setup_s = time.perf_counter() - started
    round_s, accuracies = [], []
    for number in range(1, args.rounds + 1):
        round_started = time.perf_counter()
        workload.train_epoch(model, x_train, y_train, seed=number)
        accuracies.append(workload.test_accuracy(model)[1])
        round_s.append(time.perf_counter() - round_started)
    record = {
        "runner": "centralized",
        "num_clients": 1,
        "rounds": args.rounds,
        "torch_threads": threads,
        "setup_s": setup_s,
        "round_s": round_s,
        "mean_round_s_excl_first": sum(round_s[1:]) / max(len(round_s) - 1, 1),
        "acc_per_round": accuracies,
        "final_test_acc": accuracies[-1],
        "self_peak_rss_mb": workload.peak_rss_mb(),
    }
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
