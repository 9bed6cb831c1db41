/*
 * aarch64 per-CPU freelist: four rseq critical sections on the current
 * CPU's stack of int64 handles.  Contract: asm/CONTRACT.md ("freelist").
 * Follows asm/x86_64/freelist.S line for line.  ARMv8.0 only.
 *
 * Common prologue (every function, inside the section):
 *   blk = g->blocks + cpu * g->stride, escaping if cpu >= g->nslots;
 *   a non-zero blk->stop means a slow path owns this stack: STOPPED.
 * Each reads the stack and commits blk->word in the same section, so a
 * handle can neither be popped twice nor lost (no ABA: nothing another
 * CPU does can change this CPU's stack while we are inside).
 *
 * Registers: x0..x4 are the arguments and are never written (retry is a
 * branch back), w9 counts the attempts left, x10..x15 are scratch; x10
 * holds blk where x86_64 has %rax, x11 the word (%r10), x12 the count (%r11).
 * Macro bodies use no "#param" (the preprocessor would stringify it) and
 * only C comments (a // comment would swallow the rest of the macro).
 */
#include "../rseq_abi.h"

/* stlr and ldar take a bare base register: the word is addressed as [blk]. */
.if RSEQ_PY_FL_WORD != 0
	.error "freelist.S commits with stlr [blk]: RSEQ_PY_FL_WORD must be 0"
.endif

#ifdef RSEQ_PY_INJECT
#define SYM(name) name##_inject
/* The widest window: after the last load, before the commit. */
#define INJECT_DELAY(reg, label)				\
	adrp	reg, rseq_py_inject_loops;			\
	ldr	reg, [reg, :lo12:rseq_py_inject_loops];		\
label:								\
	cbz	reg, label##_done;				\
	sub	reg, reg, #1;					\
	b	label;						\
label##_done:
/* ARMv8.0 has no single-instruction atomic add: an LL/SC loop, safe here
 * because the abort handler is outside the section. */
#define INJECT_COUNT_ABORT(label)				\
	adrp	x12, rseq_py_inject_aborts;			\
	add	x12, x12, :lo12:rseq_py_inject_aborts;		\
label:								\
	ldxr	x10, [x12];					\
	add	x10, x10, #1;					\
	stxr	w11, x10, [x12];				\
	cbnz	w11, label
#else
#define SYM(name) name
#define INJECT_DELAY(reg, label)
#define INJECT_COUNT_ABORT(label)
#endif

/* Begin a function: attempts, arm, and the common prologue leaving blk in
 * x10.  cs: its descriptor; pfx: its label prefix.  cpu_id is loaded with
 * ldr w10, which zero-extends: -1/-2 become huge and the one unsigned
 * compare against nslots escapes them.  stop is read with ldar: an owner's
 * edits of the block are seen once its release of stop is. */
#define PROLOGUE(cs, pfx)					\
	mov	w9, #RSEQ_PY_MAX_ATTEMPTS;			\
pfx##_retry:							\
	adrp	x10, cs;					\
	add	x10, x10, :lo12:cs;				\
	str	x10, [x0, #RSEQ_PY_AREA_RSEQ_CS];		\
pfx##_start:							\
	ldr	w10, [x0, #RSEQ_PY_AREA_CPU_ID];		\
	ldr	x11, [x1, #RSEQ_PY_FL_GEOM_NSLOTS];		\
	cmp	x10, x11;					\
	b.hs	pfx##_escape;					\
	ldr	x11, [x1, #RSEQ_PY_FL_GEOM_STRIDE];		\
	ldr	x12, [x1, #RSEQ_PY_FL_GEOM_BLOCKS];		\
	madd	x10, x10, x11, x12;				\
	add	x11, x10, #RSEQ_PY_FL_STOP;			\
	ldar	x11, [x11];					\
	cbnz	x11, pfx##_stopped

/* End a function: the exits, signature and abort handler.  nothing_code is
 * an immediate written without its "#" (optional in A64 syntax), since
 * "#nothing_code" would be stringified by the preprocessor. */
#define EPILOGUE(pfx, nothing_code)				\
pfx##_escape:							\
	mov	w0, #RSEQ_PY_ESCAPE;				\
	ret;							\
pfx##_stopped:							\
	mov	w0, #RSEQ_PY_STOPPED;				\
	ret;							\
pfx##_nothing:							\
	mov	w0, nothing_code;				\
	ret;							\
	.inst	RSEQ_PY_SIG; /* brk #0x45e0: traps if ever executed */	\
pfx##_abort:							\
	INJECT_COUNT_ABORT(pfx##_count);			\
	subs	w9, w9, #1;					\
	b.ne	pfx##_retry;					\
	mov	w0, #RSEQ_PY_EXHAUSTED;				\
	ret

#define DESCRIPTOR(cs, pfx)					\
	.p2align 5;						\
cs:								\
	.long	0, 0;						\
	.quad	pfx##_start;					\
	.quad	pfx##_post_commit - pfx##_start;		\
	.quad	pfx##_abort

#define FUNCTION(name)						\
	.p2align 4;						\
	.globl	SYM(name);					\
	.hidden	SYM(name);					\
	.type	SYM(name), %function;				\
SYM(name):

	.text

/* int rseq_py_fl_push(struct rseq *area [x0], const struct rseq_py_fl_geom *g [x1],
 *                     int64_t handle [x2]) */
FUNCTION(rseq_py_fl_push)
	.cfi_startproc
	PROLOGUE(.Lcs_push, .Lpush)
	ldr	x11, [x10, #RSEQ_PY_FL_WORD]
	mov	w12, w11			/* count */
	ldr	x13, [x10, #RSEQ_PY_FL_LIMIT]
	cmp	x12, x13
	b.hs	.Lpush_nothing
	/* Above count: invisible until the commit, so safe to redo. */
	add	x13, x10, x12, lsl #3
	str	x2, [x13, #RSEQ_PY_FL_ITEMS]
	INJECT_DELAY(x12, .Lpush_delay)
	mov	x12, #RSEQ_PY_FL_PUSH_ONE
	add	x11, x11, x12
	/* Commit, a store-release: the word that makes items[count] part of
	 * the stack must not be visible to another CPU (an owner draining or
	 * stealing) before the item itself. */
	stlr	x11, [x10]
.Lpush_post_commit:
	mov	w0, #RSEQ_PY_OK
	ret
	EPILOGUE(.Lpush, RSEQ_PY_FULL)
	.cfi_endproc
	.size	SYM(rseq_py_fl_push), . - SYM(rseq_py_fl_push)

/* int rseq_py_fl_pop(struct rseq *area [x0], const struct rseq_py_fl_geom *g [x1],
 *                    int64_t *out [x2]) */
FUNCTION(rseq_py_fl_pop)
	.cfi_startproc
	PROLOGUE(.Lcs_pop, .Lpop)
	ldr	x11, [x10, #RSEQ_PY_FL_WORD]
	mov	w12, w11			/* count */
	cbz	x12, .Lpop_nothing
	add	x13, x10, x12, lsl #3
	ldr	x12, [x13, #RSEQ_PY_FL_ITEMS - 8]
	INJECT_DELAY(x13, .Lpop_delay)
	sub	x11, x11, #1
	/* Commit.  A plain store: a pop publishes nothing new. */
	str	x11, [x10, #RSEQ_PY_FL_WORD]
.Lpop_post_commit:
	/* The handle is ours now; hand it over outside the section. */
	str	x12, [x2]
	mov	w0, #RSEQ_PY_OK
	ret
	EPILOGUE(.Lpop, RSEQ_PY_EMPTY)
	.cfi_endproc
	.size	SYM(rseq_py_fl_pop), . - SYM(rseq_py_fl_pop)

/* int rseq_py_fl_push_many(struct rseq *area [x0], const struct rseq_py_fl_geom *g [x1],
 *                          const int64_t *src [x2], uint64_t n [x3]), n >= 1 */
FUNCTION(rseq_py_fl_push_many)
	.cfi_startproc
	PROLOGUE(.Lcs_pushm, .Lpushm)
	ldr	x11, [x10, #RSEQ_PY_FL_WORD]
	mov	w12, w11			/* count */
	ldr	x13, [x10, #RSEQ_PY_FL_LIMIT]
	sub	x13, x13, x12			/* room = limit - count */
	cmp	x3, x13
	b.hi	.Lpushm_nothing
	add	x12, x10, x12, lsl #3
	add	x12, x12, #RSEQ_PY_FL_ITEMS	/* dst = &items[count] */
	mov	x13, #0
.Lpushm_copy:					/* above count: safe to redo */
	ldr	x10, [x2, x13, lsl #3]
	str	x10, [x12, x13, lsl #3]
	add	x13, x13, #1
	cmp	x13, x3
	b.lo	.Lpushm_copy
	/* blk again (same cpu: a migration would have aborted us). */
	ldr	w10, [x0, #RSEQ_PY_AREA_CPU_ID]
	ldr	x14, [x1, #RSEQ_PY_FL_GEOM_STRIDE]
	ldr	x15, [x1, #RSEQ_PY_FL_GEOM_BLOCKS]
	madd	x10, x10, x14, x15
	add	x11, x11, x3
	mov	x12, #RSEQ_PY_FL_PUSH_ONE - 1	/* pushes + 1 */
	add	x11, x11, x12
	INJECT_DELAY(x13, .Lpushm_delay)
	/* Commit, a store-release: the copied items must be visible to
	 * another CPU no later than the word that makes them the stack's. */
	stlr	x11, [x10]
.Lpushm_post_commit:
	mov	w0, #RSEQ_PY_OK
	ret
	EPILOGUE(.Lpushm, RSEQ_PY_FULL)
	.cfi_endproc
	.size	SYM(rseq_py_fl_push_many), . - SYM(rseq_py_fl_push_many)

/* int rseq_py_fl_pop_many(struct rseq *area [x0], const struct rseq_py_fl_geom *g [x1],
 *                         int64_t *dst [x2], uint64_t n [x3], uint64_t *npopped [x4]),
 * n >= 1; pops min(n, count) from the top: dst[m-1] is the old top. */
FUNCTION(rseq_py_fl_pop_many)
	.cfi_startproc
	PROLOGUE(.Lcs_popm, .Lpopm)
	ldr	w12, [x10, #RSEQ_PY_FL_WORD]	/* count (low half of word) */
	cbz	x12, .Lpopm_nothing
	cmp	x12, x3
	csel	x13, x12, x3, lo		/* m = min(n, count) */
	str	x13, [x4]			/* private: safe to redo */
	add	x10, x10, x12, lsl #3
	add	x10, x10, #RSEQ_PY_FL_ITEMS
	sub	x10, x10, x13, lsl #3		/* src = &items[count - m] */
	mov	x12, #0
.Lpopm_copy:					/* into private memory: safe to redo */
	ldr	x11, [x10, x12, lsl #3]
	str	x11, [x2, x12, lsl #3]
	add	x12, x12, #1
	cmp	x12, x13
	b.lo	.Lpopm_copy
	/* blk and word again: only this CPU's sections (which would abort
	 * us) or a stopped-and-fenced owner (excluded above) change them. */
	ldr	w10, [x0, #RSEQ_PY_AREA_CPU_ID]
	ldr	x14, [x1, #RSEQ_PY_FL_GEOM_STRIDE]
	ldr	x15, [x1, #RSEQ_PY_FL_GEOM_BLOCKS]
	madd	x10, x10, x14, x15
	ldr	x11, [x10, #RSEQ_PY_FL_WORD]
	sub	x11, x11, x13
	INJECT_DELAY(x12, .Lpopm_delay)
	/* Commit.  A plain store: a pop publishes nothing new. */
	str	x11, [x10, #RSEQ_PY_FL_WORD]
.Lpopm_post_commit:
	mov	w0, #RSEQ_PY_OK
	ret
	EPILOGUE(.Lpopm, RSEQ_PY_EMPTY)
	.cfi_endproc
	.size	SYM(rseq_py_fl_pop_many), . - SYM(rseq_py_fl_pop_many)

	/* Descriptors: absolute addresses need load-time relocation, so they
	 * live in writable data (never in .text of a shared object). */
	.data
	DESCRIPTOR(.Lcs_push, .Lpush)
	DESCRIPTOR(.Lcs_pop, .Lpop)
	DESCRIPTOR(.Lcs_pushm, .Lpushm)
	DESCRIPTOR(.Lcs_popm, .Lpopm)

#ifdef RSEQ_PY_INJECT
	.hidden	rseq_py_inject_loops
	.hidden	rseq_py_inject_aborts
#endif
	.section .note.GNU-stack, "", %progbits
