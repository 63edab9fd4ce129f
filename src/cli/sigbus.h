/* Checkpoint tensors are read through memory maps. When a shard shrinks after it was validated
 * (a download or sync rewriting it) or the disk returns an I/O error, the read does not fail: the
 * kernel sends SIGBUS, which would kill the process without a word and leave the temporary
 * output folder behind. While the guard is armed, its handler names the shard, removes the
 * temporary folder (async-signal-safe calls only) and exits 1. */
#ifndef M2O_SIGBUS_H
#define M2O_SIGBUS_H

#include "checkpoint/safetensors.h"
#include "common/err.h"

/* tmp_dir: the flat temporary output folder to remove; final_dir: the path named in the
 * message; lock_file (may be NULL): the output lock's file, removed too; parent and created_top
 * (may be NULL or ""): the output's parent folder and the outermost folder of it this run
 * created, which are removed (when empty) as outdir_abort does. All are copied. */
int sigbus_guard_arm(const st_checkpoint *ck, const char *tmp_dir, const char *final_dir,
                     const char *lock_file, const char *parent, const char *created_top, m2o_err *err);
/* Restores the default SIGBUS action and frees the guard's table. */
void sigbus_guard_disarm(void);

#endif
