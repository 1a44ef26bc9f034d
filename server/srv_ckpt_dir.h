/*
 * srv_ckpt_dir: where checkpoints live on disk, and nothing else.
 *
 * DIR/step-N (N zero-padded to 8 digits) holds one checkpoint: one part
 * per server that owns chunks and, once every part is durable, a MANIFEST.
 * A step folder with a MANIFEST is whole; one without is unfinished (a
 * crash, a full disk, a killed server) and is never resumed from.  The
 * protocol that writes and reads the files is srv_ckpt's; this module only
 * names, creates, lists and removes the folders.  Errors come back as
 * PS_E* with a detail message naming the path.
 */
#ifndef SRV_CKPT_DIR_H
#define SRV_CKPT_DIR_H

#include <stddef.h>
#include <stdint.h>

/* "DIR/step-N" into out[cap]. */
void srv_ckpt_dir_step(char *out, size_t cap, const char *dir, uint64_t step);
/* Creates DIR (when missing) and its step folder SDIR, each new entry
 * fsynced in its parent, so a power cut keeps what was reported made. */
int srv_ckpt_dir_make(const char *dir, const char *sdir);
/* The steps of DIR's step folders, newest first, in *out (malloc'd, the
 * caller frees it; NULL when there are none).  PS_ENOENT when DIR cannot
 * be opened (errno kept), PS_ENOMEM. */
int srv_ckpt_dir_list(const char *dir, uint64_t **out, size_t *n);
/* Whether DIR/step-N has its MANIFEST (the checkpoint is whole). */
int srv_ckpt_dir_whole(const char *dir, uint64_t step);
/* Removes DIR/step-N and the files in it (parts, MANIFEST, the temporary
 * files of a write that was cut short); PS_EIO when it cannot. */
int srv_ckpt_dir_remove(const char *dir, uint64_t step);

#endif
