#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, one after the other:
#
#     fuzz/run.sh [seconds-per-target]      (default 60)
#
# Installs cargo-fuzz if it is missing. Seeds are read from fuzz/corpus/<target> (kept in git, never
# written to); what the fuzzer finds goes to fuzz/target/corpus/<target> (ignored, kept between
# runs), crashes and hangs to fuzz/artifacts/<target>. Exits non-zero if any target crashed, hung
# (over 5 s on one input), went over 2 GiB, or failed to build. TARGETS="a b" runs only those.
set -uo pipefail

seconds=${1:-60}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [seconds-per-target]" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
# The machine is shared: one compiler job unless told otherwise.
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
toolchain=${FUZZ_TOOLCHAIN:-+nightly}

if ! cargo "$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz || exit 2
fi

read -r -a targets <<<"${TARGETS:-request_head chunked response_head config}"

echo "== building ${targets[*]}"
cargo "$toolchain" fuzz build || exit 1

failed=()
for target in "${targets[@]}"; do
    echo "== $target: ${seconds}s"
    mkdir -p "fuzz/target/corpus/$target" "fuzz/corpus/$target"
    if ! cargo "$toolchain" fuzz run "$target" \
        "fuzz/target/corpus/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "== FAILED: ${failed[*]} (inputs in fuzz/artifacts/; see fuzz/README.md to reproduce)" >&2
    exit 1
fi
echo "== no crash, hang or leak in ${targets[*]}"
