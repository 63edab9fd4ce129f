#!/usr/bin/env bash
# Fault injection (project issue 8): a full disk, a file size limit, SIGINT/SIGTERM/SIGKILL in the
# middle of a conversion, a shard that shrinks while it is read, an unreadable shard. Each must
# leave either the previous complete model or nothing at the output path (a killed run may leave
# only its hidden temporary folder, which the next run removes), exit non-zero, and print one
# clear error line. The messages are the "faults" table of README.md (section Errors), checked like the
# catalogue's. Plain bash + coreutils; prints "ok"/"FAIL"/"skip" lines and "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
export LC_ALL=C

BIN=${M2O_BIN:-build/moe2onnx}
DOC=README.md
. tests/tools/errcheck.sh

if [ ! -x "$BIN" ]; then fail "$BIN is missing (run make)"; finish; fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/m2o-faults.XXXXXX") || { fail "mktemp"; finish; }
mnt=""
cleanup() {
    [ -n "$mnt" ] && umount "$mnt" 2>/dev/null
    chmod -R u+rwx "$tmp" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

TINY=tests/fixtures/gpt-oss-tiny
name=""; desc=""; out=""; keep_sum=""; ck=""

# A checkpoint big enough that a conversion runs for many seconds: gpt-oss-20b's real shapes with
# one layer (2.8 GB), sparse (all zeros), so it takes no disk space and no time to make.
BIG=$tmp/big
"$BIN" synth --sparse -q --preset gpt-oss-20b --layers 1 -o "$BIG" >/dev/null 2>&1 ||
    { fail "synth of the big checkpoint"; finish; }

new_case() { name=$1; desc=$2; out=$3; keep_sum=""; ck=""; problems=""; }

previous_model() { # converts the tiny fixture into $out and remembers its bytes
    "$BIN" -q --threads 2 -i "$TINY" -o "$out" -p int4 -e cpu >/dev/null 2>&1 ||
        problem "could not convert the previous model"
    keep_sum=$(tree_sum "$out")
}

# report RC WANT_RC NEEDLE...: the one-line contract, then the state of the output path.
report() {
    local rc=$1 want=$2; shift 2
    [ "$rc" -eq "$want" ] || problem "exit $rc, expected $want"
    check_error_line "$tmp/stderr" "$tmp/stdout" "$@"
    if [ -n "$keep_sum" ]; then check_same_tree "$out" "$keep_sum"; check_no_temp "$out"
    else check_no_output "$out"; fi
    if [ -z "$problems" ]; then ok "$name"; else fail "$name: $problems"; fi
    problems=""
    table_row "$name" "$rc" "$desc" "$(normalize "$(head -n1 "$tmp/stderr")" "$ck" "$out")"
}

check_no_temp() {
    local stale
    stale=$(find "$(dirname "$1")" -maxdepth 1 -name ".$(basename "$1").moe2onnx-*" 2>/dev/null)
    [ -z "$stale" ] || problem "temporary folder left behind: $stale"
}

# start_big OUT [ARGS...]: converts the big checkpoint in the background ($pid); returns once
# the conversion has written its first bytes (the data file in the temporary folder grew).
start_big() {
    local o=$1; shift
    "$BIN" -i "$BIG" -o "$o" -p int4 -e cpu --threads 1 "$@" >"$tmp/stdout" 2>"$tmp/stderr" &
    pid=$!
    local data i size
    data=$(dirname "$o")/.$(basename "$o").moe2onnx-tmp-$pid/model.onnx.data
    for i in $(seq 1200); do # up to a minute on a loaded machine
        size=$(stat -c %s "$data" 2>/dev/null || echo 0)
        [ "$size" -gt 0 ] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# never_started WHAT: the background conversion did not reach its first bytes (or ended first).
never_started() {
    kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    fail "$name: the conversion ended before it could be $1: $(head -c 300 "$tmp/stderr")"
}

# ---- disk full: a file size limit (always available) ----
new_case file-size-limit "ulimit -f 4096 (4 MiB), -p fp32 needs 47 MB" "$tmp/out/fsize"
mkdir -p "$tmp/out"
(ulimit -f 4096; exec "$BIN" -q --threads 2 -i "$TINY" -o "$out" -p fp32 -e cpu) \
    >"$tmp/stdout" 2>"$tmp/stderr"
report $? 1 "File too large" "ulimit -f"

new_case file-size-limit-overwrite "the same with --overwrite over a previous model" "$tmp/out/fsize-prev"
previous_model
(ulimit -f 4096; exec "$BIN" -q --threads 2 -i "$TINY" -o "$out" -p fp32 -e cpu --overwrite) \
    >"$tmp/stdout" 2>"$tmp/stderr"
report $? 1 "File too large"

# ---- disk full: a small tmpfs (needs mount permission; skipped without it) ----
mkdir -p "$tmp/small"
if mount -t tmpfs -o size=40m m2o-faults "$tmp/small" 2>/dev/null; then
    mnt=$tmp/small
    new_case disk-full-overwrite "40 MB tmpfs holding a 24 MB fp16 model; -p fp32 --overwrite" "$mnt/model"
    "$BIN" -q --threads 2 -i "$TINY" -o "$out" -p fp16 -e cpu >/dev/null 2>&1 || problem "fp16 model did not fit"
    keep_sum=$(tree_sum "$out")
    "$BIN" -q --threads 2 -i "$TINY" -o "$out" -p fp32 -e cpu --overwrite >"$tmp/stdout" 2>"$tmp/stderr"
    report $? 1 "No space left on device" "disk full"

    new_case disk-full "the same tmpfs, a new output folder" "$mnt/other"
    "$BIN" -q --threads 2 -i "$TINY" -o "$out" -p fp32 -e cpu >"$tmp/stdout" 2>"$tmp/stderr"
    report $? 1 "No space left on device"
    umount "$mnt" && mnt=""
else
    echo "skip disk-full, disk-full-overwrite: cannot mount a tmpfs here (not root?)"
fi

# ---- signals mid-conversion ----
for sig in INT TERM; do
    case $sig in INT) code=130 ;; TERM) code=143 ;; esac
    new_case "sig${sig,,}" "SIG$sig once the first bytes are written" "$tmp/out/sig${sig,,}"
    if start_big "$out"; then
        kill -"$sig" "$pid"; wait "$pid"; rc=$?
        report "$rc" "$code" "interrupted" "$out"
    else
        never_started interrupted
    fi
done

new_case sigint-overwrite "SIGINT during an --overwrite run: the previous model stays" "$tmp/out/sigint-prev"
previous_model
if start_big "$out" --overwrite; then
    kill -INT "$pid"; wait "$pid"; rc=$?
    report "$rc" 130 "interrupted"
else
    never_started interrupted
fi

# SIGKILL cannot be handled: what is left must not look like a model, and the next run must
# remove the dead run's temporary folder.
new_case sigkill "SIGKILL, then a second run" "$tmp/out/sigkill"
if start_big "$out"; then
    kill -KILL "$pid"; wait "$pid" 2>/dev/null
    stale=$(dirname "$out")/.$(basename "$out").moe2onnx-tmp-$pid
    [ ! -e "$out" ] || problem "$out exists after SIGKILL"
    [ -d "$stale" ] || problem "no temporary folder after SIGKILL (was the kill too late?)"
    if "$BIN" -q --threads 2 -i "$TINY" -o "$out" -p int4 -e cpu >/dev/null 2>"$tmp/stderr"; then
        [ ! -e "$stale" ] || problem "the next run left the killed run's temporary folder"
        [ -f "$out/model.onnx" ] && [ -f "$out/genai_config.json" ] || problem "the next run's model is incomplete"
    else
        problem "the next run failed: $(cat "$tmp/stderr")"
    fi
    if [ -z "$problems" ]; then ok "$name: no model at the path; the next run removed the stale temporary folder"
    else fail "$name: $problems"; fi
    problems=""
else
    never_started killed
fi

new_case sigkill-overwrite "SIGKILL during an --overwrite run" "$tmp/out/sigkill-prev"
previous_model
if start_big "$out" --overwrite; then
    kill -KILL "$pid"; wait "$pid" 2>/dev/null
    check_same_tree "$out" "$keep_sum"
    if [ -z "$problems" ]; then ok "$name: the previous model is intact"; else fail "$name: $problems"; fi
    problems=""
else
    never_started killed
fi

# ---- two conversions, one output ----
new_case concurrent-output "a second conversion to the -o of one still running" "$tmp/out/concurrent"
if start_big "$out"; then
    t0=$(date +%s%N)
    "$BIN" -q --threads 2 -i "$TINY" -o "$out" -p int4 -e cpu >"$tmp/stdout2" 2>"$tmp/stderr2"; rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    [ "$ms" -lt 5000 ] || problem "the second run took $ms ms to refuse"
    kill -INT "$pid"; wait "$pid"
    mv "$tmp/stdout2" "$tmp/stdout"; mv "$tmp/stderr2" "$tmp/stderr"
    [ ! -e "$(dirname "$out")/.$(basename "$out").moe2onnx-lock" ] || problem "lock file left behind"
    report "$rc" 1 "another moe2onnx" "$out"
else
    never_started "raced"
fi

# stdout closed before the summary line: the model is complete, so the exit status is 0.
new_case closed-stdout "stdout is a pipe closed early" "$tmp/out/closed-stdout"
"$BIN" --threads 2 -i "$TINY" -o "$out" -p int4 -e cpu 2>"$tmp/stderr" | head -c0; rc=${PIPESTATUS[0]}
if [ "$rc" -eq 0 ] && [ -f "$out/model.onnx" ] && [ ! -s "$tmp/stderr" ]; then
    ok "$name: exit 0 and a complete model (the summary line is lost)"
else
    fail "$name: exit $rc, stderr: $(head -c 300 "$tmp/stderr")"
fi

# An interrupted synth removes the shard it was writing (no .partial file stays).
new_case synth-interrupted "SIGINT while synth writes a shard" "$tmp/out/synth"
"$BIN" synth -q --preset gpt-oss-20b --layers 1 --threads 1 -o "$out" >/dev/null 2>"$tmp/stderr" &
pid=$!
for i in $(seq 1200); do
    ls "$out"/*.partial >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
done
kill -INT "$pid"; wait "$pid"; rc=$?
left=$(ls "$out"/*.partial 2>/dev/null)
if [ "$rc" -eq 130 ] && [ -z "$left" ] && grep -q "interrupted" "$tmp/stderr" && [ "$(wc -l <"$tmp/stderr")" -eq 1 ]; then
    ok "$name: exit 130, no .partial shard left"
else
    fail "$name: exit $rc, left: $left, stderr: $(head -c 300 "$tmp/stderr")"
fi
rm -rf "$out"

# ---- shards that cannot be read ----
# The shard shrinks after it was opened and validated: reads through the memory map raise
# SIGBUS, which the converter turns into an error naming the shard.
# -o names a folder under two new ones: the SIGBUS exit removes them too, as a failed run does.
new_case shard-shrinks "the shard is truncated to 0 bytes mid-conversion" "$tmp/out/shrink-new/sub/model"
ck=$tmp/shrinking
mkdir -p "$ck"
cp --sparse=always "$BIG"/* "$ck/"
BIG_SAVED=$BIG; BIG=$ck
if start_big "$out"; then
    truncate -s 0 "$ck/model.safetensors"; wait "$pid"; rc=$?
    [ ! -e "$tmp/out/shrink-new" ] || problem "the parent folders the run created are left behind"
    report "$rc" 1 "$ck/model.safetensors" "re-download"
else
    never_started "cut short by truncating its shard"
fi
BIG=$BIG_SAVED; rm -rf "$ck"

new_case unreadable-shard "shard mode 000 (run without CAP_DAC_OVERRIDE when root)" "$tmp/out/unreadable"
ck=$tmp/unreadable
mkdir -p "$ck"; cp "$TINY"/*.json "$TINY"/model-*.safetensors "$ck/"
chmod 000 "$ck/model-00002-of-00002.safetensors"
RUN=()
if [ "$(id -u)" -eq 0 ]; then RUN=(setpriv --bounding-set=-dac_override,-dac_read_search --); fi
"${RUN[@]}" "$BIN" -q --threads 2 -i "$ck" -o "$out" -p int4 -e cpu >"$tmp/stdout" 2>"$tmp/stderr"
report $? 1 "model-00002-of-00002.safetensors" "Permission denied"

check_doc_table faults
finish
