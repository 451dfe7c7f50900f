#!/usr/bin/env bash
# The daemon benchmark on two trees in one run, alternating old and new twice, so a change of structure is judged
# against the tree before it on the same machine, in the same minutes (docs/performance.md, "Old and new tree").
#
#   bash benchmarks/bench_trees.sh OLD_REV [bench_daemon.py flags]
#   bash benchmarks/bench_trees.sh 13584e0 --modes batched,process --devices 1000,2000 --fs 100 --seconds 24
#
# OLD_REV is checked out in a temporary git worktree; each tree's own benchmarks/bench_daemon.py runs with that
# tree's package first on PYTHONPATH (the daemon it starts inherits it). "new" is this working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$(cd "${BIN:-.venv/bin}" && pwd)
OUT=$(mkdir -p "${OUT:-runs/bench_trees}" && cd "${OUT:-runs/bench_trees}" && pwd)
OLD_REV=${1:?usage: bench_trees.sh OLD_REV [bench_daemon.py flags]}
shift
OLD_DIR=$(mktemp -d)
git worktree add -q --detach "$OLD_DIR" "$OLD_REV"
trap 'git worktree remove --force "$OLD_DIR"' EXIT
for round in 1 2; do
  for tree in old new; do
    dir=$ROOT; [ "$tree" = old ] && dir=$OLD_DIR
    echo; echo "## $tree tree ($(git -C "$dir" rev-parse --short HEAD)), round $round: bench_daemon.py $*"
    (cd "$dir" && PYTHONPATH="$dir" "$BIN/python" benchmarks/bench_daemon.py "$@" --out "$OUT/$tree-$round.json")
  done
done
"$BIN/python" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {(t, r): json.loads((out / f"{t}-{r}.json").read_text())["rows"] for t in ("old", "new") for r in (1, 2)}
points = sorted({(row["mode"], row["devices"]) for rows in runs.values() for row in rows})
print("\n| mode | devices | old p99 ms (1, 2) | new p99 ms (1, 2) | old p50 ms | new p50 ms | lost old / new |")
print("|---|---|---|---|---|---|---|")
def cell(tree, mode, n, key):
    vals = [row[key] for r in (1, 2) for row in runs[(tree, r)] if (row["mode"], row["devices"]) == (mode, n)]
    return ", ".join(str(v) for v in vals) or "–"
for mode, n in points:
    print(f"| {mode} | {n} | {cell('old', mode, n, 'p99_ms')} | {cell('new', mode, n, 'p99_ms')} | "
          f"{cell('old', mode, n, 'p50_ms')} | {cell('new', mode, n, 'p50_ms')} | "
          f"{cell('old', mode, n, 'lost')} / {cell('new', mode, n, 'lost')} |")
PY
