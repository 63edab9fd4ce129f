#!/usr/bin/env bash
# A model family is one file filling one table entry (src/arch/family.h): the compiler refuses an
# entry that leaves a part out. Compiles a copy of a real family file with each of M2O_FAMILY's
# arguments dropped in turn (must fail, naming the macro) and unchanged (must compile). Prints
# "ok"/"FAIL" per check and a final "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/../.."

passed=0; failed=0
ok()   { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/m2o-family.XXXXXX") || { fail "mktemp"; finish; }
trap 'rm -rf "$tmp"' EXIT
cc=${CC:-cc}
flags="-std=c11 -D_GNU_SOURCE -Wall -Werror -fsyntax-only -Isrc -Ibuild/gen $(pkg-config --cflags libcjson libprotobuf-c)"
src=src/arch/qwen2_moe.c
# the entry's arguments, as written in the file (one call, possibly over several lines)
call=$(sed -n '/^M2O_FAMILY(/,/);/p' "$src" | tr '\n' ' ')
if [ -z "$call" ]; then fail "$src has no M2O_FAMILY entry"; finish; fi
if $cc $flags "$src" 2>"$tmp/err"; then ok "$src compiles as written"
else fail "$src does not compile: $(head -n1 "$tmp/err")"; fi

args=$(echo "$call" | sed 's/^M2O_FAMILY(//; s/); *$//')
n=$(echo "$args" | awk -F', ' '{print NF}')
if [ "$n" -ne 11 ]; then fail "expected 11 arguments in $src's entry, found $n"; finish; fi
for drop in $(seq 1 "$n"); do
    cut=$(echo "$args" | awk -F', ' -v d="$drop" '{s=""; for (i = 1; i <= NF; i++) if (i != d) s = s (s == "" ? "" : ", ") $i; print s}')
    # the file with its entry replaced by one missing argument $drop
    awk -v repl="M2O_FAMILY($cut);" '
        /^M2O_FAMILY\(/ { skipping = 1 }
        skipping { if (/\);/) { print repl; skipping = 0 } ; next }
        { print }' "$src" >"$tmp/family.c"
    if $cc $flags -Isrc/arch "$tmp/family.c" 2>"$tmp/err"; then
        fail "an entry without argument $drop compiled"
    elif grep -q "M2O_FAMILY" "$tmp/err"; then
        ok "an entry without argument $drop is refused by the compiler"
    else
        fail "argument $drop dropped: unexpected error $(head -n1 "$tmp/err")"
    fi
done
finish
