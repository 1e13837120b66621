"""Split the shared evaluation data into dev and test halves, reproducibly, without copying it.

Each item goes to dev or test by a salted SHA-256 of its content (pairs: the two texts; UCI clusters:
the story id, so that a story never straddles the split, with whole stories dealt to the
side that has fewer headlines so far). Hashing rather than shuffling keeps every
item's side fixed even if a file is reordered or rows are added. The split files are written under
--out (default build/splits, which git ignores); the data itself stays in ../shared/data.

    python scripts/split_data.py                      # writes build/splits/*.{dev,test}.tsv
    python scripts/split_data.py --data /path/to/shared/data --out /tmp/splits
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from pathlib import Path

SALT = "headline-cluster-split-v1"
DEV_SHARE = 0.5
PAIR_FILES = ("sts_headlines_en_2013_2015", "sts17_ar_ar", "semeval2022_ar_slugs_train")
CLUSTER_FILE = "uci_news_stories_dev"


def side(key: str) -> str:
    """'dev' or 'test' for ``key``: a fixed function of the key and the salt."""
    digest = hashlib.sha256(f"{SALT}\x1f{key}".encode()).digest()
    return "dev" if int.from_bytes(digest[:8], "big") / 2**64 < DEV_SHARE else "test"


def _balanced_story_sides(rows: list[list[str]], story: int) -> dict[str, str]:
    """Whole stories to each side, in salted-hash order, each to the side with fewer headlines so far.

    Story sizes are very uneven (9 to 230 headlines), so a coin flip per story can leave one side with
    a fifth of the headlines; greedy filling keeps both halves comparable while staying deterministic.
    """
    sizes: dict[str, int] = {}
    for row in rows:
        sizes[row[story]] = sizes.get(row[story], 0) + 1
    order = sorted(sizes, key=lambda s: hashlib.sha256(f"{SALT}\x1f{s}".encode()).digest())
    totals = {"dev": 0, "test": 0}
    sides = {}
    for name in order:
        chosen = "dev" if totals["dev"] <= totals["test"] else "test"
        sides[name] = chosen
        totals[chosen] += sizes[name]
    return sides


def _read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[0], [r for r in rows[1:] if r]


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def split_all(data: Path, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    report = []
    for name in PAIR_FILES:
        header, rows = _read_tsv(data / "pairs" / f"{name}.tsv")
        parts: dict[str, list[list[str]]] = {"dev": [], "test": []}
        for row in rows:
            parts[side(f"{row[1]}\x1f{row[2]}")].append(row)
        for part, part_rows in parts.items():
            _write_tsv(out / f"{name}.{part}.tsv", header, part_rows)
        report.append(f"{name}: dev {len(parts['dev'])} pairs, test {len(parts['test'])} pairs")
    header, rows = _read_tsv(data / "clusters" / f"{CLUSTER_FILE}.tsv")
    story = header.index("story")
    parts = {"dev": [], "test": []}
    assigned = _balanced_story_sides(rows, story)
    for row in rows:
        parts[assigned[row[story]]].append(row)
    for part, part_rows in parts.items():
        _write_tsv(out / f"{CLUSTER_FILE}.{part}.tsv", header, part_rows)
        stories = len({r[story] for r in part_rows})
        report.append(f"{CLUSTER_FILE}.{part}: {len(part_rows)} headlines, {stories} stories")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--data", type=Path, default=root.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=root / "build" / "splits")
    args = parser.parse_args(argv)
    if not (args.data / "pairs").is_dir():
        print(f"error: {args.data}: no pairs/ folder (pass --data with the shared data folder)", file=sys.stderr)
        return 2
    for line in split_all(args.data, args.out):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
