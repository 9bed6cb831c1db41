/*
 * rseq_abi.h - constants shared by the assembly (the .S files under asm/) and the C
 * layer (csrc/).  Plain #defines only, so the same file is included by the
 * preprocessor in front of the assembler and by the C compiler.
 *
 * The calling contract these constants belong to is asm/CONTRACT.md.
 */
#ifndef RSEQ_PY_RSEQ_ABI_H
#define RSEQ_PY_RSEQ_ABI_H

/* struct rseq (kernel ABI, include/uapi/linux/rseq.h): byte offsets. */
#define RSEQ_PY_AREA_CPU_ID_START 0  /* u32: always a valid cpu; never written by us */
#define RSEQ_PY_AREA_CPU_ID       4  /* u32: cpu or -1 (unregistered) / -2 (failed) */
#define RSEQ_PY_AREA_RSEQ_CS      8  /* u64: pointer to the armed descriptor */
#define RSEQ_PY_AREA_FLAGS        16 /* u32: never written, never asserted 0 */
#define RSEQ_PY_AREA_NODE_ID      20 /* u32: filled when feature size >= 24 (6.3+) */
#define RSEQ_PY_AREA_MM_CID       24 /* u32: filled when feature size >= 28 (6.3+) */

/* struct rseq_cs (descriptor, aligned 32): byte offsets. */
#define RSEQ_PY_CS_VERSION            0
#define RSEQ_PY_CS_FLAGS              4
#define RSEQ_PY_CS_START_IP           8
#define RSEQ_PY_CS_POST_COMMIT_OFFSET 16
#define RSEQ_PY_CS_ABORT_IP           24

/*
 * Signatures: the 4 bytes just before every abort handler.  When glibc
 * registered the thread the kernel checks glibc's value, so we use the same
 * one for our own registrations too; one build then works in both modes.
 */
#if defined(__x86_64__)
#define RSEQ_PY_SIG 0x53053053
#elif defined(__aarch64__)
#define RSEQ_PY_SIG 0xd428bc00
#endif

/* Return codes of every critical-section function (CONTRACT.md). */
#define RSEQ_PY_OK        0 /* committed: the one final store happened */
#define RSEQ_PY_ESCAPE    1 /* not entered: cpu_id < 0 or cpu_id >= nslots */
#define RSEQ_PY_EXHAUSTED 2 /* aborted RSEQ_PY_MAX_ATTEMPTS times in a row */
#define RSEQ_PY_STOPPED   3 /* freelist: this CPU's stack is owned by a slow path */
#define RSEQ_PY_FULL      4 /* freelist push: not enough room (count + n > limit) */
#define RSEQ_PY_EMPTY     5 /* freelist pop: this CPU's stack is empty */

/* Freelist geometry (struct rseq_py_fl_geom, read by the sections). */
#define RSEQ_PY_FL_GEOM_BLOCKS 0  /* char *: CPU 0's block */
#define RSEQ_PY_FL_GEOM_STRIDE 8  /* u64: bytes between two CPUs' blocks */
#define RSEQ_PY_FL_GEOM_NSLOTS 16 /* u64: number of CPU blocks */

/* A freelist CPU block: header line, then the stack of handles. */
#define RSEQ_PY_FL_WORD  0   /* u64: count (low 32 bits) | pushes (high 32) */
#define RSEQ_PY_FL_LIMIT 8   /* u64: count may not exceed it; owner-only */
#define RSEQ_PY_FL_STOP  16  /* u64: 0, or the token of the slow path owning it */
#define RSEQ_PY_FL_ITEMS 128 /* int64[]: items[0..count) are the stack */
#define RSEQ_PY_FL_PUSH_ONE 0x100000001 /* word delta of one push: count+1, pushes+1 */

/*
 * Attempts before giving up.  A section of a few instructions aborts only
 * when a preemption, migration or signal lands inside it; 32 aborts in a
 * row means something pathological (a debugger single-stepping, a signal
 * storm), and the C slow path is then the better place to be.
 */
#define RSEQ_PY_MAX_ATTEMPTS 32

#endif
