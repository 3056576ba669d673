#!/usr/bin/env bash
# Morph monotonicity over corpus pairs (issue 15's target): every 97th file of O'Neill's and
# Ryan's collections, paired in order, morphed in 8 steps with `melodist morph --measure`;
# counts the steps that move away from A and towards B, the steps that hold (same notes as
# the step before, which count as monotone), and the morphs monotone throughout.
#
# Usage: tools/morph-monotonicity.sh [TEMPERATURE] [BARS]
#   TEMPERATURE: default 0.3; BARS: hooks of the first BARS bars (default: whole tunes).
#   Needs a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-0.3}
BARS=${2:-}
CORPUS=${CORPUS:-../shared/corpus/pd}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
files=$( (ls "$CORPUS"/oneills1850/*.mid; ls "$CORPUS"/ryansMammoth/*.mid) | awk 'NR % 97 == 1')
set -- $files
total=0; mono=0; held=0; pairs=0; all=0
while [ $# -ge 2 ]; do
  line=$(target/release/melodist morph --a "$1" --b "$2" --steps 8 --out "$OUT" --measure \
    --temperature "$T" ${BARS:+--bars "$BARS"} 2>&1 | grep "steps that move" || true)
  shift 2
  [ -z "$line" ] && continue
  counts=$(echo "$line" | sed -E 's/.*: ([0-9]+)\/([0-9]+) .*held \(same notes\): ([0-9]+).*/\1 \2 \3/')
  read -r a b h <<< "$counts"
  total=$((total + b)); mono=$((mono + a)); held=$((held + h)); pairs=$((pairs + 1))
  if [ "$a" = "$b" ]; then all=$((all + 1)); fi
done
echo "temperature $T${BARS:+, first $BARS bars}: $mono/$total steps monotone ($held of them held), $all/$pairs morphs monotone at every step"
