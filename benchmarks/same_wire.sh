#!/usr/bin/env bash
# The wire contract, old tree against this one: the same input through each tree's daemon (benchmarks/same_wire.py,
# without and with a state store) must publish the same estimates, key for key and in the same key order, and the
# same heartbeat keys. Usage: bash benchmarks/same_wire.sh OLD_REV
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$(cd "${BIN:-.venv/bin}" && pwd)
OLD_DIR=$(mktemp -d)
WORK=$(mktemp -d)
git worktree add -q --detach "$OLD_DIR" "${1:?usage: same_wire.sh OLD_REV}"
trap 'git worktree remove --force "$OLD_DIR"; rm -rf "$WORK"' EXIT
for tree in old new; do
  dir=$ROOT; [ "$tree" = old ] && dir=$OLD_DIR
  PYTHONPATH="$dir" "$BIN/python" benchmarks/same_wire.py > "$WORK/$tree.json"
  PYTHONPATH="$dir" "$BIN/python" benchmarks/same_wire.py "$WORK/$tree.sqlite" > "$WORK/$tree-store.json"
done
"$BIN/python" - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
same = True
for kind in ("", "-store"):
    old, new = (json.load(open(f"{work}/{t}{kind}.json")) for t in ("old", "new"))
    equal = old == new and [list(e) for e in old["estimates"]] == [list(e) for e in new["estimates"]]
    reasons = sorted({str(e.get("reason")) for e in new["estimates"]})
    print(f"{'with' if kind else 'without'} a state store: {len(new['estimates'])} estimates (reasons {reasons}), "
          f"{'identical' if equal else 'DIFFERENT'} to the old tree's")
    same &= equal
sys.exit(0 if same else 1)
PY
