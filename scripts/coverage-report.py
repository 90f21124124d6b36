"""Per-crate line coverage from tarpaulin's JSON report, and the gate.

    coverage-report.py target/coverage/tarpaulin-report.json --floor 70

Prints one row per crate (the first directory of each file's path; the root
crate's src/ is `easy-note`) and the total, and exits 1 when the total is
below the floor.
"""

import argparse
import json
import os
import sys
from collections import defaultdict

CRATE_DIRS = {
    "shared": "easy-note-shared",
    "user-service": "user-service",
    "note-service": "note-service",
    "api-gateway": "api-gateway",
    "src": "easy-note",
}


def crate_of(path, root):
    rel = os.path.relpath(path, root)
    first = rel.split(os.sep, 1)[0]
    return CRATE_DIRS.get(first, first)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--floor", type=float, required=True, help="least total line coverage, percent")
    args = parser.parse_args()
    with open(args.report) as f:
        report = json.load(f)
    root = os.getcwd()
    covered = defaultdict(int)
    coverable = defaultdict(int)
    for file in report["files"]:
        path = os.path.join(*file["path"]) if isinstance(file["path"], list) else file["path"]
        crate = crate_of(path, root)
        covered[crate] += file["covered"]
        coverable[crate] += file["coverable"]
    if not coverable:
        sys.exit("coverage: the report lists no files")
    print(f"{'crate':<20} {'lines':>7} {'covered':>8} {'coverage':>9}")
    for crate in sorted(coverable):
        pct = 100.0 * covered[crate] / coverable[crate] if coverable[crate] else 100.0
        print(f"{crate:<20} {coverable[crate]:>7} {covered[crate]:>8} {pct:>8.1f}%")
    total_covered, total = sum(covered.values()), sum(coverable.values())
    pct = 100.0 * total_covered / total
    print(f"{'total':<20} {total:>7} {total_covered:>8} {pct:>8.1f}%")
    if pct < args.floor:
        sys.exit(f"coverage: {pct:.1f}% is below the floor of {args.floor:.1f}%")
    print(f"coverage: {pct:.1f}% (floor {args.floor:.1f}%)")


if __name__ == "__main__":
    main()
