/*
 * x86_64 per-CPU freelist: four rseq critical sections on the current
 * CPU's stack of int64 handles.  Contract: asm/CONTRACT.md ("freelist").
 * The aarch64 file asm/aarch64/freelist.S follows it line for line.
 *
 * Common prologue (every function, inside the section):
 *   blk = g->blocks + cpu * g->stride, escaping if cpu >= g->nslots;
 *   a non-zero blk->stop means a slow path owns this stack: STOPPED.
 * Each reads the stack and commits blk->word in the same section, so a
 * handle can neither be popped twice nor lost (no ABA: nothing another
 * CPU does can change this CPU's stack while we are inside).
 */
#include "../rseq_abi.h"

#ifdef RSEQ_PY_INJECT
#define SYM(name) name##_inject
/* The widest window: after the last load, before the commit. */
#define INJECT_DELAY(reg, label)			\
	movq	rseq_py_inject_loops(%rip), reg;	\
label:							\
	testq	reg, reg;				\
	jz	label##_done;				\
	decq	reg;					\
	jmp	label;					\
label##_done:
#define INJECT_COUNT_ABORT lock incq rseq_py_inject_aborts(%rip)
#else
#define SYM(name) name
#define INJECT_DELAY(reg, label)
#define INJECT_COUNT_ABORT
#endif

/* Begin a function: attempts, arm, and the common prologue leaving blk in
 * %rax.  cs: its descriptor; pfx: its label prefix. */
#define PROLOGUE(cs, pfx)					\
	movl	$RSEQ_PY_MAX_ATTEMPTS, %r9d;			\
pfx##_retry:							\
	leaq	cs(%rip), %rax;					\
	movq	%rax, RSEQ_PY_AREA_RSEQ_CS(%rdi);		\
pfx##_start:							\
	movl	RSEQ_PY_AREA_CPU_ID(%rdi), %eax;		\
	cmpq	RSEQ_PY_FL_GEOM_NSLOTS(%rsi), %rax;		\
	jae	pfx##_escape;					\
	imulq	RSEQ_PY_FL_GEOM_STRIDE(%rsi), %rax;		\
	addq	RSEQ_PY_FL_GEOM_BLOCKS(%rsi), %rax;		\
	cmpq	$0, RSEQ_PY_FL_STOP(%rax);			\
	jne	pfx##_stopped

/* End a function: the exits, signature and abort handler. */
#define EPILOGUE(pfx, nothing_code)				\
pfx##_escape:							\
	movl	$RSEQ_PY_ESCAPE, %eax;				\
	ret;							\
pfx##_stopped:							\
	movl	$RSEQ_PY_STOPPED, %eax;				\
	ret;							\
pfx##_nothing:							\
	movl	$nothing_code, %eax;				\
	ret;							\
	.byte	0x0f, 0xb9, 0x3d; /* ud1 RSEQ_PY_SIG(%rip), %edi */	\
	.long	RSEQ_PY_SIG;					\
pfx##_abort:							\
	INJECT_COUNT_ABORT;					\
	decl	%r9d;						\
	jnz	pfx##_retry;					\
	movl	$RSEQ_PY_EXHAUSTED, %eax;			\
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
	.type	SYM(name), @function;				\
SYM(name):

	.text

/* int rseq_py_fl_push(struct rseq *area [rdi], const struct rseq_py_fl_geom *g [rsi],
 *                     int64_t handle [rdx]) */
FUNCTION(rseq_py_fl_push)
	.cfi_startproc
	PROLOGUE(.Lcs_push, .Lpush)
	movq	RSEQ_PY_FL_WORD(%rax), %r10
	movl	%r10d, %r11d			/* count */
	cmpq	RSEQ_PY_FL_LIMIT(%rax), %r11
	jae	.Lpush_nothing
	/* Above count: invisible until the commit, so safe to redo. */
	movq	%rdx, RSEQ_PY_FL_ITEMS(%rax,%r11,8)
	INJECT_DELAY(%r11, .Lpush_delay)
	movabsq	$RSEQ_PY_FL_PUSH_ONE, %r11
	addq	%r11, %r10
	/* Commit.  x86 is TSO: the item store is visible before this one. */
	movq	%r10, RSEQ_PY_FL_WORD(%rax)
.Lpush_post_commit:
	xorl	%eax, %eax
	ret
	EPILOGUE(.Lpush, RSEQ_PY_FULL)
	.cfi_endproc
	.size	SYM(rseq_py_fl_push), . - SYM(rseq_py_fl_push)

/* int rseq_py_fl_pop(struct rseq *area [rdi], const struct rseq_py_fl_geom *g [rsi],
 *                    int64_t *out [rdx]) */
FUNCTION(rseq_py_fl_pop)
	.cfi_startproc
	PROLOGUE(.Lcs_pop, .Lpop)
	movq	RSEQ_PY_FL_WORD(%rax), %r10
	movl	%r10d, %r11d			/* count */
	testq	%r11, %r11
	jz	.Lpop_nothing
	movq	RSEQ_PY_FL_ITEMS-8(%rax,%r11,8), %r11
	INJECT_DELAY(%rcx, .Lpop_delay)
	decq	%r10
	movq	%r10, RSEQ_PY_FL_WORD(%rax)	/* commit */
.Lpop_post_commit:
	/* The handle is ours now; hand it over outside the section. */
	movq	%r11, (%rdx)
	xorl	%eax, %eax
	ret
	EPILOGUE(.Lpop, RSEQ_PY_EMPTY)
	.cfi_endproc
	.size	SYM(rseq_py_fl_pop), . - SYM(rseq_py_fl_pop)

/* int rseq_py_fl_push_many(struct rseq *area [rdi], const struct rseq_py_fl_geom *g [rsi],
 *                          const int64_t *src [rdx], uint64_t n [rcx]), n >= 1 */
FUNCTION(rseq_py_fl_push_many)
	.cfi_startproc
	PROLOGUE(.Lcs_pushm, .Lpushm)
	movq	RSEQ_PY_FL_WORD(%rax), %r10
	movl	%r10d, %r11d			/* count */
	movq	RSEQ_PY_FL_LIMIT(%rax), %r8
	subq	%r11, %r8			/* room = limit - count */
	cmpq	%r8, %rcx
	ja	.Lpushm_nothing
	leaq	RSEQ_PY_FL_ITEMS(%rax,%r11,8), %r11	/* dst = &items[count] */
	xorl	%r8d, %r8d
.Lpushm_copy:					/* above count: safe to redo */
	movq	(%rdx,%r8,8), %rax
	movq	%rax, (%r11,%r8,8)
	incq	%r8
	cmpq	%rcx, %r8
	jb	.Lpushm_copy
	/* blk again (same cpu: a migration would have aborted us). */
	movl	RSEQ_PY_AREA_CPU_ID(%rdi), %eax
	imulq	RSEQ_PY_FL_GEOM_STRIDE(%rsi), %rax
	addq	RSEQ_PY_FL_GEOM_BLOCKS(%rsi), %rax
	addq	%rcx, %r10
	movabsq	$RSEQ_PY_FL_PUSH_ONE - 1, %r11	/* pushes + 1 */
	addq	%r11, %r10
	INJECT_DELAY(%r8, .Lpushm_delay)
	movq	%r10, RSEQ_PY_FL_WORD(%rax)	/* commit */
.Lpushm_post_commit:
	xorl	%eax, %eax
	ret
	EPILOGUE(.Lpushm, RSEQ_PY_FULL)
	.cfi_endproc
	.size	SYM(rseq_py_fl_push_many), . - SYM(rseq_py_fl_push_many)

/* int rseq_py_fl_pop_many(struct rseq *area [rdi], const struct rseq_py_fl_geom *g [rsi],
 *                         int64_t *dst [rdx], uint64_t n [rcx], uint64_t *npopped [r8]),
 * n >= 1; pops m = min(n, count) into dst in stack order (dst[m-1] was the top). */
FUNCTION(rseq_py_fl_pop_many)
	.cfi_startproc
	PROLOGUE(.Lcs_popm, .Lpopm)
	movl	RSEQ_PY_FL_WORD(%rax), %r11d	/* count (low half of word) */
	testq	%r11, %r11
	jz	.Lpopm_nothing
	movq	%rcx, %r10
	cmpq	%rcx, %r11
	cmovb	%r11, %r10			/* m = min(n, count) */
	movq	%r10, (%r8)			/* private: safe to redo */
	leaq	RSEQ_PY_FL_ITEMS(%rax,%r11,8), %rax
	shlq	$3, %r10
	subq	%r10, %rax			/* src = &items[count - m] */
	xorl	%r11d, %r11d
.Lpopm_copy:					/* into private memory: safe to redo */
	movq	(%rax,%r11,8), %r10
	movq	%r10, (%rdx,%r11,8)
	incq	%r11
	cmpq	(%r8), %r11
	jb	.Lpopm_copy
	/* blk and word again: only this CPU's sections (which would abort
	 * us) or a stopped-and-fenced owner (excluded above) change them. */
	movl	RSEQ_PY_AREA_CPU_ID(%rdi), %eax
	imulq	RSEQ_PY_FL_GEOM_STRIDE(%rsi), %rax
	addq	RSEQ_PY_FL_GEOM_BLOCKS(%rsi), %rax
	movq	RSEQ_PY_FL_WORD(%rax), %r10
	subq	(%r8), %r10
	INJECT_DELAY(%r11, .Lpopm_delay)
	movq	%r10, RSEQ_PY_FL_WORD(%rax)	/* commit */
.Lpopm_post_commit:
	xorl	%eax, %eax
	ret
	EPILOGUE(.Lpopm, RSEQ_PY_EMPTY)
	.cfi_endproc
	.size	SYM(rseq_py_fl_pop_many), . - SYM(rseq_py_fl_pop_many)

	.data
	DESCRIPTOR(.Lcs_push, .Lpush)
	DESCRIPTOR(.Lcs_pop, .Lpop)
	DESCRIPTOR(.Lcs_pushm, .Lpushm)
	DESCRIPTOR(.Lcs_popm, .Lpopm)

#ifdef RSEQ_PY_INJECT
	.hidden	rseq_py_inject_loops
	.hidden	rseq_py_inject_aborts
#endif
	.section .note.GNU-stack, "", @progbits
