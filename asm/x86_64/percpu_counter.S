/*
 * x86_64 per-CPU counter add: one rseq critical section.
 * Contract (arguments, return codes, labels, steps): asm/CONTRACT.md.
 * The aarch64 file asm/aarch64/percpu_counter.S follows it line for line.
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
	.type	SYM(rseq_py_percpu_add), @function
/* int rseq_py_percpu_add(struct rseq *area [rdi], int64_t *slot0 [rsi],
 *                        uint64_t stride [rdx], int64_t delta [rcx],
 *                        uint64_t nslots [r8]) */
SYM(rseq_py_percpu_add):
	.cfi_startproc
	movl	$RSEQ_PY_MAX_ATTEMPTS, %r9d
.Lretry:
	/* Arm: from here the kernel checks the IP against the descriptor. */
	leaq	.Lcs(%rip), %rax
	movq	%rax, RSEQ_PY_AREA_RSEQ_CS(%rdi)
.Lstart:
	/* cpu_id must be read inside the section: a migration after this load
	 * aborts us, so the slot we index stays ours until the commit. */
	movl	RSEQ_PY_AREA_CPU_ID(%rdi), %eax
	cmpq	%r8, %rax
	jae	.Lescape
	imulq	%rdx, %rax
	addq	%rsi, %rax
	movq	(%rax), %r10
#ifdef RSEQ_PY_INJECT
	/* The value is loaded and not yet stored: the widest window there is. */
	movq	rseq_py_inject_loops(%rip), %r11
.Ldelay:
	testq	%r11, %r11
	jz	.Ldelay_done
	decq	%r11
	jmp	.Ldelay
.Ldelay_done:
#endif
	addq	%rcx, %r10
	movq	%r10, (%rax)		/* commit */
.Lpost_commit:
	xorl	%eax, %eax		/* RSEQ_PY_OK */
	ret
.Lescape:
	movl	$RSEQ_PY_ESCAPE, %eax
	ret
	/* Signature: the operand of "ud1 RSEQ_PY_SIG(%rip), %edi", an
	 * instruction that traps if ever executed.  Its last 4 bytes are the
	 * signature the kernel compares with the one registered. */
	.byte	0x0f, 0xb9, 0x3d
	.long	RSEQ_PY_SIG
.Labort:
#ifdef RSEQ_PY_INJECT
	lock incq rseq_py_inject_aborts(%rip)
#endif
	/* Argument registers are untouched by the section, so retrying is a
	 * jump; the bound turns a pathological abort storm into a slow path. */
	decl	%r9d
	jnz	.Lretry
	movl	$RSEQ_PY_EXHAUSTED, %eax
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
	.section .note.GNU-stack, "", @progbits
