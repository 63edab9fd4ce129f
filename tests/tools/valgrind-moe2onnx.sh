#!/usr/bin/env bash
# build/moe2onnx under Valgrind memcheck, for running the end-to-end scripts with
# M2O_BIN=tests/tools/valgrind-moe2onnx.sh (tests/valgrind.sh does). The program's own exit
# status passes through; an invalid access or a leak makes it 99. Memcheck's report goes to
# $M2O_VG_LOGDIR/vg.<pid>.log (nothing when M2O_VG_LOGDIR is unset), never to the program's
# stderr, so the scripts' one-line error checks still hold.
here=$(cd "$(dirname "$0")/../.." && pwd)
log=/dev/null
[ -n "${M2O_VG_LOGDIR:-}" ] && log=$M2O_VG_LOGDIR/vg.%p.log
exec valgrind --quiet --error-exitcode=99 --leak-check=full \
    --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
    --track-fds=no --log-file="$log" "${M2O_VG_TARGET:-$here/build/moe2onnx}" "$@"
