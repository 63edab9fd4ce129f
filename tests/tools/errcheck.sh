# Shared by tests/e2e/errors.test.sh and tests/e2e/faults.test.sh (sourced, not run):
# ok/FAIL bookkeeping, the one-line error contract, output-folder checks, and the tables of exact
# messages in README.md (section Errors), which the tests compare with what the binary really prints.
# Needs: $BIN (the moe2onnx binary), $tmp (scratch folder), $DOC (README.md (section Errors)).

passed=0; failed=0
ok()   { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

# The problems found by the checks below, appended one per line; empty when all held.
problems=""
problem() { problems+="${problems:+; }$*"; }

# check_error_line STDERR_FILE STDOUT_FILE NEEDLE...: stderr is exactly one line
# "moe2onnx: error: ..." holding every NEEDLE; stdout is empty.
check_error_line() {
    local errf=$1 outf=$2; shift 2
    local lines msg needle
    lines=$(wc -l <"$errf")
    msg=$(head -n1 "$errf")
    [ "$lines" -eq 1 ] || problem "stderr has $lines lines: $(head -c 600 "$errf" | tr '\n' '|')"
    case "$msg" in
        "moe2onnx: error: "*) ;;
        *) problem "stderr does not start with 'moe2onnx: error: ': $msg" ;;
    esac
    for needle in "$@"; do
        case "$msg" in
            *"$needle"*) ;;
            *) problem "message lacks '$needle': $msg" ;;
        esac
    done
    [ ! -s "$outf" ] || problem "stdout is not empty: $(head -c 300 "$outf")"
}

# check_no_output OUT: neither the folder nor a temporary folder of ours beside it exists.
check_no_output() {
    local out=$1 stale
    [ ! -e "$out" ] || problem "$out exists after the failure"
    stale=$(find "$(dirname "$out")" -maxdepth 1 -name ".$(basename "$out").moe2onnx-*" 2>/dev/null)
    [ -z "$stale" ] || problem "temporary folder left behind: $stale"
}

# tree_sum DIR: one checksum line per file, to prove a folder unchanged.
tree_sum() {
    (cd "$1" && find . -type f | LC_ALL=C sort | xargs md5sum) 2>/dev/null
}

# check_same_tree DIR SUM: DIR still has exactly the files and bytes summed earlier.
check_same_tree() {
    [ "$(tree_sum "$1")" = "$2" ] || problem "$1 changed: the previous model was not kept intact"
}

# normalize MSG CKPT OUT: the message as README.md (section Errors) shows it (scratch paths and pids
# replaced by placeholders).
normalize() {
    local m=$1 ck=$2 out=$3
    [ -n "$ck" ] && m=${m//"$ck"/<ckpt>}
    [ -n "$out" ] && m=${m//"$out"/<out>}
    m=${m//"$tmp"/<tmp>}
    printf '%s' "$m" | sed -E 's/moe2onnx-tmp-[0-9]+/moe2onnx-tmp-<pid>/g'
}

# table_row CASE EXIT DESCRIPTION MESSAGE: appends one markdown row to $rows.
rows=""
table_row() {
    local msg=${4//|/\\|} desc=${3//|/\\|}
    rows+="| \`$1\` | $desc | $2 | \`$msg\` |"$'\n'
}

# check_doc_table NAME: the rows between "<!-- NAME:begin -->" and "<!-- NAME:end -->" in $DOC
# must equal $rows (after the header lines; $DOC_HEADER replaces the first when set).
# M2O_UPDATE_DOCS=1 rewrites them instead.
check_doc_table() {
    local name=$1 begin="<!-- $1:begin -->" end="<!-- $1:end -->"
    local header=${DOC_HEADER:-"| Case | Input | Exit | Message (stderr) |"}$'\n'"|---|---|---|---|"$'\n'
    local want=$header$rows have
    if [ "${M2O_UPDATE_DOCS:-0}" = 1 ]; then
        local new
        new=$(BODY=$want awk -v b="$begin" -v e="$end" '
            $0 == b { print; printf "%s", ENVIRON["BODY"]; skip = 1; next }
            $0 == e { skip = 0 }
            !skip { print }' "$DOC") && printf '%s\n' "$new" >"$DOC"
    fi
    have=$(awk -v b="$begin" -v e="$end" '$0 == e { on = 0 } on { print } $0 == b { on = 1 }' "$DOC" 2>/dev/null)
    if [ "$have" = "${want%$'\n'}" ]; then
        ok "$DOC table '$name' lists exactly these messages"
    else
        fail "$DOC table '$name' differs from the messages printed (M2O_UPDATE_DOCS=1 rewrites it):"
        diff <(printf '%s\n' "$have") <(printf '%s' "$want") | head -n 40 | sed 's/^/    /'
    fi
}
