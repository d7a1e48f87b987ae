#!/usr/bin/env bash
# Builds rapport-fuzz with libFuzzer and runs each target for SECONDS (default 60).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      TARGET: frames, messages, records (default: all)
#
# The build has its own scratch path, so it leaves the normal build alone. Each target's corpus
# grows in .build-fuzz/corpus/TARGET across runs; it starts from the golden frames of
# Protocol/vectors (frames, messages) and from Tests/FuzzCorpus/TARGET (record seeds, and every
# input that once found a bug, replayed first on every run). An input that breaks a property is
# saved as .build-fuzz/crashes/TARGET/crash-* and the script exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames messages records)

scratch=.build-fuzz
swift build -c release --product rapport-fuzz --scratch-path "$scratch" \
    -Xswiftc -sanitize=fuzzer -Xswiftc -DRAPPORT_FUZZ
binary="$scratch/release/rapport-fuzz"

# The golden frames as binary: whole for `frames`, without the length prefix for `messages`.
seeds="$scratch/seeds"
mkdir -p "$seeds/frames" "$seeds/messages"
for hex in Protocol/vectors/*.hex; do
    name="$(basename "$hex" .hex)"
    perl -0777 -ne 's/\s+//g; print pack("H*", $_)' "$hex" >"$seeds/frames/$name"
    perl -0777 -ne 's/\s+//g; print substr(pack("H*", $_), 4)' "$hex" >"$seeds/messages/$name"
done

failed=()
for target in "${targets[@]}"; do
    corpus="$scratch/corpus/$target"
    crashes="$scratch/crashes/$target"
    mkdir -p "$corpus" "$crashes"
    inputs=("$corpus")
    [ -d "$seeds/$target" ] && inputs+=("$seeds/$target")
    [ -d "Tests/FuzzCorpus/$target" ] && inputs+=("Tests/FuzzCorpus/$target")
    echo "== $target for ${seconds}s"
    # New inputs go to the first directory only: the committed ones stay as they are.
    if RAPPORT_FUZZ_TARGET="$target" "$binary" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$crashes/" "${inputs[@]}" >"$scratch/$target.log" 2>&1; then
        grep -E '^#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec' "$scratch/$target.log" || true
    else
        tail -n 60 "$scratch/$target.log"
        echo "== $target FAILED: input in $crashes/ (log: $scratch/$target.log)"
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found failures in: ${failed[*]}"
    exit 1
fi
echo "fuzzing: ${targets[*]} ran ${seconds}s each, no failure"
