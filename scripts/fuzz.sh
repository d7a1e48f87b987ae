#!/usr/bin/env bash
# Builds rapport-fuzz with libFuzzer and runs each target for SECONDS (default 60).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      TARGET: frames, messages, records (default: all)
#   scripts/fuzz.sh --quick [SECONDS] [TARGET...]
#
# --quick (CI) builds rapport-fuzz in the normal release build, without libFuzzer, replays the
# seeds and Tests/FuzzCorpus, then mutates them at random for SECONDS per target (default 20),
# with a seed it prints (RAPPORT_FUZZ_SEED sets it): the same checks, found by chance instead of
# by coverage, without the instrumented build's minutes.
#
# The build has its own scratch path, so it leaves the normal build alone. Each target's corpus
# grows in .build-fuzz/corpus/TARGET across runs; it starts from the golden frames of
# Protocol/vectors (frames, messages) and from Tests/FuzzCorpus/TARGET (record seeds, and every
# input that once found a bug, replayed first on every run). An input that breaks a property is
# saved as .build-fuzz/crashes/TARGET/crash-* and the script exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
if [ "${1:-}" = "--quick" ]; then quick=true; shift; fi
seconds="${1:-$($quick && echo 20 || echo 60)}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames messages records)

scratch=.build-fuzz
if $quick; then
    swift build -c release --product rapport-fuzz
    binary=".build/release/rapport-fuzz"
else
    swift build -c release --product rapport-fuzz --scratch-path "$scratch" \
        -Xswiftc -sanitize=fuzzer -Xswiftc -DRAPPORT_FUZZ
    binary="$scratch/release/rapport-fuzz"
fi

# The golden frames as binary: whole for `frames`, without the length prefix for `messages`.
seeds="$scratch/seeds"
mkdir -p "$seeds/frames" "$seeds/messages"
for hex in Protocol/vectors/*.hex; do
    name="$(basename "$hex" .hex)"
    perl -0777 -ne 's/\s+//g; print pack("H*", $_)' "$hex" >"$seeds/frames/$name"
    perl -0777 -ne 's/\s+//g; print substr(pack("H*", $_), 4)' "$hex" >"$seeds/messages/$name"
done

if $quick; then
    seed="${RAPPORT_FUZZ_SEED:-$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')}"
    failed=()
    for target in "${targets[@]}"; do
        inputs=()
        [ -d "$seeds/$target" ] && inputs+=("$seeds/$target")
        [ -d "Tests/FuzzCorpus/$target" ] && inputs+=("Tests/FuzzCorpus/$target")
        crashes="$scratch/crashes/$target"
        mkdir -p "$crashes"
        last="$crashes/last-input"
        echo "== $target: replay, then mutations for ${seconds}s, seed $seed"
        if ! "$binary" "$target" "${inputs[@]}" 2>"$scratch/$target.log" \
            || ! "$binary" mutate "$target" "$seconds" "$seed" "$last" "${inputs[@]}" 2>>"$scratch/$target.log"; then
            tail -n 40 "$scratch/$target.log"
            echo "== $target FAILED (seed $seed): the input is $last, as hex:"
            od -An -tx1 -v "$last" | tr -d ' \n' | head -c 4000; echo
            failed+=("$target")
        fi
    done
    if [ ${#failed[@]} -gt 0 ]; then
        echo "fuzzing (quick) found failures in: ${failed[*]}; RAPPORT_FUZZ_SEED=$seed repeats the run"
        exit 1
    fi
    echo "fuzzing (quick): ${targets[*]} replayed and mutated ${seconds}s each, no failure"
    exit 0
fi

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
