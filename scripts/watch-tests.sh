#!/usr/bin/env bash
# Runs a test command (`swift test` and its arguments) under a hang watch.
#
# A test process that stops making progress holds CI until CI's own limit kills it, and then
# all that is left is a log that ends in the middle of a line. The watch notices instead: when
# the command prints nothing for RAPPORT_HANG_MINUTES minutes (default 15: a test's time limit
# is 10 minutes, and a live process reports a test over it long before that), it prints the
# threads of every test process (their stacks, demangled, when gdb is on the machine), the
# tests that started and never ended, stops the command, and fails.
#
#   bash scripts/watch-tests.sh swift test [arguments...]
set -uo pipefail

minutes=${RAPPORT_HANG_MINUTES:-15}
log=$(mktemp "${TMPDIR:-/tmp}/rapport-tests.XXXXXX")
trap 'rm -f "$log" "$log.hang"' EXIT

# Every process the tests start inherits this mark, so that what a crashed test process left
# running (servers, PostgreSQL) is found and ended when the command is over.
mark="watch-$$-$RANDOM"
leftovers() {
    for environ in /proc/[0-9]*/environ; do
        grep -qz "^RAPPORT_TEST_RUN=$mark\$" "$environ" 2> /dev/null || continue
        pid=${environ#/proc/}; pid=${pid%/environ}
        [ "$pid" != "$$" ] && echo "$pid"
    done
}
end_leftovers() {
    local pids
    pids=$(leftovers)
    [ -z "$pids" ] && return
    echo "watch-tests: ending processes the tests left running:"
    for pid in $pids; do echo "  $pid $(tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null | cut -c1-150)"; done
    kill -KILL $pids 2> /dev/null
}

RAPPORT_TEST_RUN=$mark "$@" > >(tee -a "$log") 2>&1 &
command_pid=$!

# The command's processes and all theirs (swift test runs the test processes in process groups
# of their own), so that the watch looks at and stops those and nothing else on the machine.
descendants() {
    ps -eo pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END { for (pid in parent) { p = pid; while (p in parent && p != root && p > 1) p = parent[p]; if (p == root && pid != root) print pid } }'
}

# Tests that printed "started" and no end, in the order they started: the suspects of a hang.
unfinished() {
    awk '
        /◇ Test .* started\./ { sub(/^.*◇ Test /, ""); sub(/ started\.$/, ""); if (!($0 in open)) order[++n] = $0; open[$0] = 1; next }
        /[✔✘] Test .* (passed|failed)/ {
            line = $0; sub(/^.*[✔✘] Test /, "", line); sub(/ (passed|failed).*$/, "", line); delete open[line]
        }
        END { for (i = 1; i <= n; i++) if (order[i] in open) print "  " order[i] }
    ' "$log"
}

# The stacks of the test processes, demangled, or at least their threads' names and states.
stacks() {

    for pid in $(descendants "$command_pid"); do
        grep -q 'PackageTests\.xctest' "/proc/$pid/cmdline" 2> /dev/null || continue
        echo "--- test process $pid: $(tr '\0' ' ' < "/proc/$pid/cmdline" | cut -c1-200)"
        if command -v gdb > /dev/null; then
            gdb -p "$pid" -batch -ex 'set pagination off' -ex 'thread apply all bt 25' 2>/dev/null \
                | grep -E '^(Thread|#)' | { if command -v swift-demangle > /dev/null; then swift-demangle --simplified; else swift demangle --simplified 2>/dev/null || cat; fi; } \
                | cut -c1-300
        else
            for task in /proc/"$pid"/task/*; do
                echo "thread $(basename "$task") $(cat "$task/comm") $(awk '{print $3}' "$task/stat") $(cat "$task/wchan" 2>/dev/null)"
            done
        fi
    done
}

last_size=-1
quiet=0
while kill -0 "$command_pid" 2> /dev/null; do
    sleep 10
    size=$(stat -c %s "$log")
    if [ "$size" != "$last_size" ]; then last_size=$size; quiet=0; continue; fi
    quiet=$((quiet + 10))
    if [ "$quiet" -ge $((minutes * 60)) ]; then
        {
            echo
            echo "watch-tests: no output for $minutes minutes; the test processes' threads:"
            stacks
            echo "watch-tests: stopping the tests after $minutes minutes without output. Started and not ended:"
            unfinished
        } > "$log.hang" 2>&1
        cat "$log.hang"
        stragglers=$(descendants "$command_pid")
        kill -KILL "$command_pid" $stragglers 2> /dev/null
        wait "$command_pid" 2> /dev/null
        end_leftovers
        # What the tail of the log shows first: the tests the hang held.
        echo "watch-tests: the tests hung; started and not ended:"
        unfinished
        exit 124
    fi
done
wait "$command_pid"
status=$?
end_leftovers
exit $status
