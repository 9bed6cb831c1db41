/* Test-only variant of percpu_counter.S: same source, with an injected delay
 * inside the section and an abort counter (asm/CONTRACT.md, "injection"). */
#define RSEQ_PY_INJECT 1
#include "percpu_counter.S"
