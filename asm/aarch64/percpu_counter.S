/*
 * aarch64 per-CPU counter add: one rseq critical section.
 * Contract (arguments, return codes, labels, steps): asm/CONTRACT.md.
 * Follows asm/x86_64/percpu_counter.S line for line.  ARMv8.0 only.
 */
#include "../rseq_abi.h"

#ifdef RSEQ_PY_INJECT
#define SYM(name) name##_inject
#else
#define SYM(name) name
#endif

	.text
	.p2align 4
	.globl	SYM(rseq_py_percpu_add)
	.hidden	SYM(rseq_py_percpu_add)
	.type	SYM(rseq_py_percpu_add), %function
/* int rseq_py_percpu_add(struct rseq *area [x0], int64_t *slot0 [x1],
 *                        uint64_t stride [x2], int64_t delta [x3],
 *                        uint64_t nslots [x4]) */
SYM(rseq_py_percpu_add):
	.cfi_startproc
	mov	w9, #RSEQ_PY_MAX_ATTEMPTS
.Lretry:
	/* Arm: from here the kernel checks the IP against the descriptor. */
	adrp	x10, .Lcs
	add	x10, x10, :lo12:.Lcs
	str	x10, [x0, #RSEQ_PY_AREA_RSEQ_CS]
.Lstart:
	/* cpu_id must be read inside the section: a migration after this load
	 * aborts us, so the slot we index stays ours until the commit. */
	ldr	w10, [x0, #RSEQ_PY_AREA_CPU_ID]
	cmp	x10, x4
	b.hs	.Lescape
	madd	x10, x10, x2, x1
	ldr	x11, [x10]
#ifdef RSEQ_PY_INJECT
	/* The value is loaded and not yet stored: the widest window there is. */
	adrp	x12, rseq_py_inject_loops
	ldr	x12, [x12, :lo12:rseq_py_inject_loops]
.Ldelay:
	cbz	x12, .Ldelay_done
	sub	x12, x12, #1
	b	.Ldelay
.Ldelay_done:
#endif
	add	x11, x11, x3
	/* Commit.  A plain store: it publishes only this counter word, which a
	 * reader on another CPU needs whole (an aligned 64-bit store is
	 * single-copy atomic), not ordered against anything else. */
	str	x11, [x10]
.Lpost_commit:
	mov	w0, #RSEQ_PY_OK
	ret
.Lescape:
	mov	w0, #RSEQ_PY_ESCAPE
	ret
	/* Signature: "brk #0x45e0", which traps if ever executed.  The kernel
	 * compares this word with the one registered. */
	.inst	RSEQ_PY_SIG
.Labort:
#ifdef RSEQ_PY_INJECT
	/* ARMv8.0 has no single-instruction atomic add: an LL/SC loop, safe
	 * here because the abort handler is outside the section. */
	adrp	x12, rseq_py_inject_aborts
	add	x12, x12, :lo12:rseq_py_inject_aborts
.Lcount:
	ldxr	x10, [x12]
	add	x10, x10, #1
	stxr	w11, x10, [x12]
	cbnz	w11, .Lcount
#endif
	/* Argument registers are untouched by the section, so retrying is a
	 * branch; the bound turns a pathological abort storm into a slow path. */
	subs	w9, w9, #1
	b.ne	.Lretry
	mov	w0, #RSEQ_PY_EXHAUSTED
	ret
	.cfi_endproc
	.size	SYM(rseq_py_percpu_add), . - SYM(rseq_py_percpu_add)

	/* Descriptor: absolute addresses need load-time relocation, so it lives
	 * in writable data (never in .text of a shared object). */
	.data
	.p2align 5
.Lcs:
	.long	0				/* version */
	.long	0				/* flags: must be 0 */
	.quad	.Lstart				/* start_ip */
	.quad	.Lpost_commit - .Lstart		/* post_commit_offset */
	.quad	.Labort				/* abort_ip */

#ifdef RSEQ_PY_INJECT
	.hidden	rseq_py_inject_loops
	.hidden	rseq_py_inject_aborts
#endif
	.section .note.GNU-stack, "", %progbits
