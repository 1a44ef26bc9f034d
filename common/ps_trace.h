/*
 * ps_trace: a timeline of what each rank does, in Chrome's trace event
 * format (chrome://tracing, Perfetto).
 *
 * Each process records complete events ("ph":"X": a name, a start and a
 * duration in microseconds of CLOCK_REALTIME, the rank as pid) into a
 * bounded in-memory buffer; nothing is written while training runs.  At
 * the end every rank writes its part next to the trace path
 * (PATH.part-<world rank>, through ps_atomic: a symlink planted at that
 * predictable name is replaced, not followed), and then one rank merges
 * all parts it finds (not following symlinks)
 * into PATH as one JSON object {"traceEvents": [...]}, with a process-name
 * entry per rank, and removes the parts.  Give both binaries the same
 * --trace PATH; ranks on other hosts need a shared folder for their part
 * to be merged.  Recording is off (and costs one branch) until
 * ps_trace_start.  Not thread-safe: record from the main thread only.
 */
#ifndef PS_TRACE_H
#define PS_TRACE_H

#include <stdint.h>

/* Start recording for this process (`label` e.g. "worker 1"). */
int ps_trace_start(const char *path, int world_rank, const char *label);
int ps_trace_on(void);
/* Microseconds now, for ps_trace_event's start. */
int64_t ps_trace_now(void);
/* A complete event from `start_us` to now; `step` < 0 leaves it out. */
void ps_trace_event(const char *name, int64_t start_us, int64_t step);
/* Write this rank's part; PS_EIO naming the path on failure. */
int ps_trace_write_part(void);
/* Merge every part of the trace path into the final file.  `nranks` parts
 * are expected; missing ones are reported in the detail, not fatal. */
int ps_trace_merge(int nranks);
void ps_trace_stop(void);

#endif
