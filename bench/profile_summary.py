"""Summarise a py-spy "raw" (collapsed stack) profile: top functions by self and total samples.

Usage: python bench/profile_summary.py PROFILE.txt [--top N]
"""

import argparse
from collections import Counter


def summarise(path: str, top: int) -> str:
    self_samples: Counter = Counter()
    total_samples: Counter = Counter()
    all_samples = 0
    with open(path, encoding="utf-8") as file:
        for line in file:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            all_samples += count
            frames = stack.split(";")
            self_samples[frames[-1]] += count
            for frame in set(frames):
                total_samples[frame] += count
    lines = [f"{all_samples} samples", "", "self %  function"]
    for frame, count in self_samples.most_common(top):
        lines.append(f"{count / all_samples * 100:6.1f}  {frame}")
    lines += ["", "total %  function"]
    for frame, count in total_samples.most_common(top):
        lines.append(f"{count / all_samples * 100:6.1f}  {frame}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", help="File written by py-spy record --format raw.")
    parser.add_argument("--top", type=int, default=25, help="Functions to list (default: 25).")
    args = parser.parse_args()
    print(summarise(args.profile, args.top))


if __name__ == "__main__":
    main()
