#!/usr/bin/env bash
# Runs the official plugin conformance checkers on Melodist's bundles:
#
#   1. clap-validator validate   (all of its tests, summarised by the validators' summary.py)
#   2. clap-validator fuzz       (time-boxed: $FUZZ_DURATION, default 2m)
#   3. vst3-validator -e         (Steinberg's validator, extensive tests)
#
# Usage: tools/validate.sh [--if-present] [--release]
#
#   --if-present  when the validators are not installed, say so and exit 0 (what CI uses);
#                 without it a missing validator is an error (exit 1).
#   --release     validate a release bundle instead of the default debug bundle.
#
# The validators are prebuilt binaries (see their README.md), looked for in
# $MELODIST_VALIDATORS, else in ../shared/tools/validators next to the repository.
# The bundle is built with `assert_process_allocs`, so in the debug build any allocation
# inside process() aborts the plugin and shows up as a crashed test.
# Each validator runs with a throw-away HOME, MELODIST_DATA_DIR and TMPDIR, removed on exit,
# so nothing the plugin writes touches your own files.
# Exit status: 0 when every validator passed, 1 when any failed (or could not run).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

# --- Arguments --------------------------------------------------------------------------
IF_PRESENT=0
PROFILE_ARGS=()
for arg in "$@"; do
  case "$arg" in
    --if-present) IF_PRESENT=1 ;;
    --release) PROFILE_ARGS=(--release) ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

FUZZ_DURATION=${FUZZ_DURATION:-2m}
# Generous wall-clock limits so a hung plugin fails the run instead of stalling it.
VALIDATE_TIMEOUT=${VALIDATE_TIMEOUT:-15m}
VST3_TIMEOUT=${VST3_TIMEOUT:-15m}

# --- Find the validators ----------------------------------------------------------------
VALIDATORS=${MELODIST_VALIDATORS:-$ROOT/../shared/tools/validators}
CLAP_VALIDATOR=$VALIDATORS/clap-validator
VST3_VALIDATOR=$VALIDATORS/vst3-validator
SUMMARY=$VALIDATORS/summary.py

missing=""
[ -d "$VALIDATORS" ] || missing="the folder"
for tool in "$CLAP_VALIDATOR" "$VST3_VALIDATOR" "$SUMMARY"; do
  [ -z "$missing" ] && [ ! -x "$tool" ] && missing="$(basename "$tool")"
done
if [ -z "$missing" ] && ! command -v python3 >/dev/null 2>&1; then
  missing="python3 (needed by summary.py)"
fi
if [ -n "$missing" ]; then
  echo "validators not found at $VALIDATORS (missing: $missing); skipping plugin validation"
  # Exit 0 only when the caller said absence is fine.
  [ "$IF_PRESENT" -eq 1 ] && exit 0
  echo "(set MELODIST_VALIDATORS to the validators folder, or pass --if-present)" >&2
  exit 1
fi
VALIDATORS=$(cd "$VALIDATORS" && pwd)
CLAP_VALIDATOR=$VALIDATORS/clap-validator
VST3_VALIDATOR=$VALIDATORS/vst3-validator
SUMMARY=$VALIDATORS/summary.py

# --- Scratch space, removed on exit -----------------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/melodist-validate.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

# Runs a command with a fresh throw-away HOME, MELODIST_DATA_DIR and TMPDIR (and XDG
# folders inside that HOME), all under $SCRATCH.
isolated() {
  local dir
  dir=$(mktemp -d "$SCRATCH/run.XXXXXX")
  mkdir -p "$dir/home" "$dir/data" "$dir/tmp"
  env HOME="$dir/home" MELODIST_DATA_DIR="$dir/data" TMPDIR="$dir/tmp" \
    XDG_CONFIG_HOME="$dir/home/.config" XDG_DATA_HOME="$dir/home/.local/share" \
    XDG_CACHE_HOME="$dir/home/.cache" XDG_STATE_HOME="$dir/home/.local/state" \
    "$@"
}

# --- Build the bundles ------------------------------------------------------------------
# nice-plug-xtask passes every argument after the package on to `cargo build`, and bundles
# from target/debug (or target/release with --release) into target/bundled/.
# The debug bundle compiles Melodist's own crate at opt-level 3 (the dev profile's 1 keeps
# test builds quick): the generator then runs near release speed, as producers run it, and
# an offline render that waits for it stays well inside the fuzzer's 60 s per chunk. Debug
# assertions stay on, so `assert_process_allocs` still checks process().
OPTIMISED=(--config 'profile.dev.package.melodist.opt-level=3')
[ "${#PROFILE_ARGS[@]}" -gt 0 ] && OPTIMISED=()
echo "==> cargo xtask bundle melodist --features assert_process_allocs ${PROFILE_ARGS[*]:-} ${OPTIMISED[*]:-}"
cargo xtask bundle melodist --features assert_process_allocs "${PROFILE_ARGS[@]}" "${OPTIMISED[@]}"
# The bundles land in <cargo's target folder>/bundled (CARGO_TARGET_DIR is honoured).
TARGET_DIR=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
CLAP_BUNDLE=$TARGET_DIR/bundled/Melodist.clap
VST3_BUNDLE=$TARGET_DIR/bundled/Melodist.vst3
for bundle in "$CLAP_BUNDLE" "$VST3_BUNDLE"; do
  [ -e "$bundle" ] || { echo "bundle not found: $bundle" >&2; exit 1; }
done
# The validators' full output is kept here for a look after the run.
LOGS=$TARGET_DIR/validate
rm -rf "$LOGS"
mkdir -p "$LOGS"

declare -A RESULT  # validator -> one-line summary
FAILED=0
fail() { FAILED=1; RESULT[$1]="FAILED: $2"; }

# --- 1. clap-validator validate ---------------------------------------------------------
echo
echo "==> clap-validator validate $CLAP_BUNDLE"
VALIDATE_JSON=$LOGS/clap-validate.json
set +e
isolated timeout "$VALIDATE_TIMEOUT" "$CLAP_VALIDATOR" validate --json "$CLAP_BUNDLE" \
  >"$VALIDATE_JSON" 2>"$LOGS/clap-validate.log"
validate_rc=$?
set -e
# Known quirk of clap-validator 0.4.1: when param-fuzz-basic and param-fuzz-bounds both
# fail, the second "crashes" with "this is a bug in the validator" (they share a temporary
# folder). Only then, re-run param-fuzz-bounds alone and put its result in place of the
# spurious crash.
if python3 - "$VALIDATE_JSON" <<'EOF'
import json, sys
try:
    results = json.load(open(sys.argv[1]))["results"]
except (ValueError, KeyError, OSError):
    sys.exit(1)
for r in results:
    name = next(iter(r["test"].values()))["test"]
    if (name == "param-fuzz-bounds" and r["status"]["code"] == "crashed"
            and "bug in the validator" in (r["status"].get("details") or "")):
        sys.exit(0)
sys.exit(1)
EOF
then
  echo "param-fuzz-bounds hit the validator's shared-folder bug; re-running it alone"
  set +e
  BOUNDS_JSON=$LOGS/clap-validate-param-fuzz-bounds.json
  isolated timeout "$VALIDATE_TIMEOUT" "$CLAP_VALIDATOR" validate --json \
    -t '^param-fuzz-bounds$' "$CLAP_BUNDLE" >"$BOUNDS_JSON" 2>>"$LOGS/clap-validate.log"
  set -e
  MERGED_JSON=$LOGS/clap-validate-merged.json
  python3 - "$VALIDATE_JSON" "$BOUNDS_JSON" "$MERGED_JSON" <<'EOF'
import json, sys
def name(r): return next(iter(r["test"].values()))["test"]
full = json.load(open(sys.argv[1]))
try:
    alone = [r for r in json.load(open(sys.argv[2]))["results"] if name(r) == "param-fuzz-bounds"]
except (ValueError, KeyError, OSError):
    alone = []
if alone:
    full["results"] = [alone[0] if name(r) == "param-fuzz-bounds" else r for r in full["results"]]
json.dump(full, open(sys.argv[3], "w"))
EOF
  VALIDATE_JSON=$MERGED_JSON
fi
set +e
validate_summary=$("$SUMMARY" <"$VALIDATE_JSON" 2>&1)
summary_rc=$?
set -e
echo "$validate_summary"
if [ "$summary_rc" -ne 0 ]; then
  # summary.py prints the failed/crashed tests; on no JSON, show the validator's own log.
  if ! grep -q '"results"' "$VALIDATE_JSON"; then
    echo "clap-validator exited with status $validate_rc; its log:"
    tail -n 30 "$LOGS/clap-validate.log"
  fi
  fail clap-validate "$(echo "$validate_summary" | head -n 1)"
elif [ "$validate_rc" -ne 0 ]; then
  fail clap-validate "clap-validator exited with status $validate_rc"
else
  RESULT[clap-validate]="ok: $(echo "$validate_summary" | head -n 1)"
fi

# --- 2. clap-validator fuzz -------------------------------------------------------------
echo
echo "==> clap-validator fuzz --duration $FUZZ_DURATION $CLAP_BUNDLE"
FUZZ_LOG=$LOGS/clap-fuzz.log
set +e
# The fuzzer stops itself after FUZZ_DURATION; the outer timeout only guards against a hang.
isolated timeout "$VALIDATE_TIMEOUT" "$CLAP_VALIDATOR" fuzz --duration "$FUZZ_DURATION" \
  "$CLAP_BUNDLE" >"$FUZZ_LOG" 2>&1
fuzz_rc=$?
set -e
# Strip colour codes. The fuzzer ends with "OK: fuzzing finished successfully" and exit
# status 0, or with a boxed report per failing chunk, whose last line reads
# "└── FAILED ─ <seed>" (or CRASHED), and exit status 1; `clap-validator fuzz -r <seed>`
# replays that chunk. The log also holds whatever the plugin prints: show only the
# fuzzer's own lines.
sed -i 's/\x1b\[[0-9;]*m//g' "$FUZZ_LOG"
grep -E ' ERROR |^(┌|│|└)|fuzzing finished' "$FUZZ_LOG" || true
fuzz_bad=$(grep -cE '^└─+ (FAILED|CRASHED)' "$FUZZ_LOG" || true)
if [ "$fuzz_rc" -eq 124 ]; then
  fail clap-fuzz "timed out after $VALIDATE_TIMEOUT"
elif [ "$fuzz_bad" -gt 0 ]; then
  fail clap-fuzz "$fuzz_bad failing chunk(s) in $FUZZ_DURATION (exit status $fuzz_rc)"
elif [ "$fuzz_rc" -ne 0 ] || ! grep -q 'fuzzing finished successfully' "$FUZZ_LOG"; then
  fail clap-fuzz "exit status $fuzz_rc, no success line"
else
  RESULT[clap-fuzz]="ok: no failing chunk in $FUZZ_DURATION"
fi

# --- 3. vst3-validator -e ---------------------------------------------------------------
echo
echo "==> vst3-validator -e $VST3_BUNDLE"
VST3_LOG=$LOGS/vst3.log
set +e
isolated timeout "$VST3_TIMEOUT" "$VST3_VALIDATOR" -e "$VST3_BUNDLE" >"$VST3_LOG" 2>&1
vst3_rc=$?
set -e
# Its log is long (a block per test, each ending in [Succeeded] or [Failed]); show what
# matters: failed tests, ERROR lines (some come inside tests that still "succeed"), and
# the closing "Result: N tests passed, M tests failed" line.
awk '/^\[/ && !/^\[(Succeeded|Failed)\]/ { test = $0 }
     /^\[Failed\]/ { print "  failed: " test }
     /ERROR/ { print "  " test " " $0 }' "$VST3_LOG"
vst3_result=$(grep -E '^Result: [0-9]+ tests passed, [0-9]+ tests failed' "$VST3_LOG" | tail -n 1 || true)
echo "${vst3_result:-no Result line}"
vst3_errors=$(grep -c 'ERROR' "$VST3_LOG" || true)
vst3_passed=$(echo "$vst3_result" | sed -nE 's/^Result: ([0-9]+) tests passed.*/\1/p')
vst3_failed=$(echo "$vst3_result" | sed -nE 's/.*, ([0-9]+) tests failed.*/\1/p')
if [ -z "$vst3_result" ]; then
  echo "vst3-validator exited with status $vst3_rc without a Result line; its last lines:"
  tail -n 30 "$VST3_LOG"
  fail vst3 "no Result line (exit status $vst3_rc)"
elif [ "$vst3_rc" -ne 0 ] || [ "$vst3_failed" -ne 0 ] || [ "$vst3_passed" -eq 0 ] \
  || [ "$vst3_errors" -ne 0 ]; then
  fail vst3 "$vst3_passed passed, $vst3_failed failed, $vst3_errors ERROR line(s), exit status $vst3_rc"
else
  RESULT[vst3]="ok: $vst3_passed tests passed, no ERROR lines"
fi

# --- Summary ----------------------------------------------------------------------------
echo
echo "==> Validation summary"
echo "  clap-validator validate: ${RESULT[clap-validate]}"
echo "  clap-validator fuzz:     ${RESULT[clap-fuzz]}"
echo "  vst3-validator -e:       ${RESULT[vst3]}"
if [ "$FAILED" -ne 0 ]; then
  echo "plugin validation FAILED (full validator output in $LOGS/)"
  exit 1
fi
echo "plugin validation passed"
