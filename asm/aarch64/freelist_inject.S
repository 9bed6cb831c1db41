/* Test-only variant of freelist.S: same source, with an injected delay
 * inside each section and an abort counter (asm/CONTRACT.md, "injection"). */
#define RSEQ_PY_INJECT 1
#include "freelist.S"
