#!/usr/bin/env bash
# Bounded fuzzing for CI: every cargo-fuzz target of this directory runs for
# FUZZ_SECONDS (default 30) and the script fails on the first crash, leak, timeout or
# out-of-memory, printing the reproducer path and the command to replay it.
#
#   fuzz/ci.sh                     all targets, 30 s each
#   FUZZ_SECONDS=300 fuzz/ci.sh    longer
#   fuzz/ci.sh recording_reader    one target
#
# Needs a nightly toolchain (libFuzzer's sanitizer flags); installs cargo-fuzz if
# missing. The eBPF object is not needed (AYA_BUILD_SKIP=1): the targets fuzz userspace
# parsers only. Seeds: the recordings under tracer-user/testdata (fixtures and golden
# traces) for recording_reader, on top of any corpus kept from earlier runs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
NIGHTLY="${FUZZ_TOOLCHAIN:-nightly}"
export AYA_BUILD_SKIP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! [[ "$FUZZ_SECONDS" =~ ^[0-9]+$ ]] || [ "$FUZZ_SECONDS" -lt 1 ]; then
    echo "fuzz/ci.sh: FUZZ_SECONDS must be a positive number of seconds, got '$FUZZ_SECONDS'" >&2
    exit 2
fi
if ! rustup toolchain list | grep -q "^$NIGHTLY"; then
    echo "fuzz/ci.sh: toolchain '$NIGHTLY' is missing; installing it" >&2
    rustup toolchain install "$NIGHTLY" --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/ci.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +"$NIGHTLY" fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz/ci.sh: no fuzz targets found" >&2
    exit 1
fi

# Seed recording_reader with real recordings (plain files only: the target reads raw
# bytes, and compressed seeds are fine too).
seed_dir=corpus/recording_reader
mkdir -p "$seed_dir"
for f in ../tracer-user/testdata/recordings/* ../tracer-user/testdata/golden/*.jsonl; do
    [ -f "$f" ] || continue
    cp -f "$f" "$seed_dir/seed-$(basename "$f")"
done

# Build everything first, so that the time limit is spent fuzzing.
if ! cargo +"$NIGHTLY" fuzz build; then
    echo "fuzz/ci.sh: building the fuzz targets failed (cargo's errors above)" >&2
    exit 1
fi

failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | sort)
    echo "=== fuzz $t for ${FUZZ_SECONDS}s ==="
    set +e
    # -rss_limit_mb / -timeout: a line that makes the reader eat memory or hang is a
    # bug too. libFuzzer exits non-zero on any of them and writes the input to artifacts/.
    cargo +"$NIGHTLY" fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 2>&1 | tail -n 40
    rc=${PIPESTATUS[0]}
    set -e
    after=$(find "artifacts/$t" -type f | sort)
    new=$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | sed '/^$/d')
    if [ "$rc" -ne 0 ] || [ -n "$new" ]; then
        echo "fuzz/ci.sh: $t FAILED (exit $rc); new artifacts: ${new:-(none: see the output above)}" >&2
        echo "  reproduce: cd fuzz && AYA_BUILD_SKIP=1 cargo +$NIGHTLY fuzz run $t <artifact>" >&2
        failed+=("$t")
    else
        echo "fuzz/ci.sh: $t ok (${FUZZ_SECONDS}s, no crash)"
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz/ci.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz/ci.sh: all ${#targets[@]} target(s) ran ${FUZZ_SECONDS}s each without a crash"
