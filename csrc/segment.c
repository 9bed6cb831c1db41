/*
 * segment.c - the header every shared segment starts with, and its check.
 *
 * A segment is plain memory another process may have written: nothing in
 * it is used before its header says it is ours, of this kind, of this
 * layout version, made for this architecture, word size and number of CPU
 * slots, complete, and no larger than what is mapped.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

_Static_assert(sizeof(struct rseq_py_segment_header) == RSEQ_PY_SEGMENT_HEADER, "header size");

#if defined(__x86_64__)
#define THIS_ARCH RSEQ_PY_ARCH_X86_64
#elif defined(__aarch64__)
#define THIS_ARCH RSEQ_PY_ARCH_AARCH64
#else
#define THIS_ARCH RSEQ_PY_ARCH_OTHER
#endif

static const char *kind_name(uint32_t kind)
{
    return kind == RSEQ_PY_KIND_COUNTER ? "PerCpuCounter"
           : kind == RSEQ_PY_KIND_FREELIST ? "PerCpuFreelist"
                                           : "unknown kind";
}

static const char *arch_name(uint32_t arch)
{
    return arch == RSEQ_PY_ARCH_X86_64 ? "x86_64" : arch == RSEQ_PY_ARCH_AARCH64 ? "aarch64" : "other";
}

HIDDEN void rseq_py_segment_init(struct rseq_py_segment_header *h, uint32_t kind, uint64_t size)
{
    memset(h, 0, sizeof *h);
    h->magic = RSEQ_PY_SEGMENT_MAGIC;
    h->version = RSEQ_PY_SEGMENT_VERSION;
    h->kind = kind;
    h->arch = THIS_ARCH;
    h->word_size = sizeof(void *);
    h->cpu_slots = rseq_py_nslots;
    h->total_size = size;
}

/* Published last, with release: an attacher that sees READY sees the rest. */
HIDDEN void rseq_py_segment_ready(struct rseq_py_segment_header *h)
{
    __atomic_store_n(&h->ready, RSEQ_PY_SEGMENT_READY, __ATOMIC_RELEASE);
}

#define FAIL(code, ...) (snprintf(why, whylen, __VA_ARGS__), (code))

int rseq_py_segment_check(const void *mem, uint64_t size, uint32_t kind, char *why, uint64_t whylen)
{
    rseq_py_init(RSEQ_PY_REQUEST_AUTO);
    const struct rseq_py_segment_header *h = mem;
    if (size < sizeof *h)
        return FAIL(RSEQ_PY_SEG_TRUNCATED, "truncated: %llu bytes, smaller than the %u-byte header",
                    (unsigned long long)size, RSEQ_PY_SEGMENT_HEADER);
    if (h->magic != RSEQ_PY_SEGMENT_MAGIC)
        return FAIL(RSEQ_PY_SEG_FOREIGN, "not an rseq_py segment (no rseq_py magic number)");
    if (__atomic_load_n(&h->ready, __ATOMIC_ACQUIRE) != RSEQ_PY_SEGMENT_READY)
        return FAIL(RSEQ_PY_SEG_INCOMPLETE,
                    "incomplete: its creator has not finished initialising it (or died doing so)");
    if (h->version != RSEQ_PY_SEGMENT_VERSION)
        return FAIL(RSEQ_PY_SEG_VERSION, "layout version %u, this rseq_py reads version %u",
                    h->version, RSEQ_PY_SEGMENT_VERSION);
    if (h->kind != kind)
        return FAIL(RSEQ_PY_SEG_KIND, "it holds a %s, not a %s", kind_name(h->kind), kind_name(kind));
    if (h->arch != THIS_ARCH)
        return FAIL(RSEQ_PY_SEG_ARCH, "made for %s, this process is %s", arch_name(h->arch),
                    arch_name(THIS_ARCH));
    if (h->word_size != sizeof(void *))
        return FAIL(RSEQ_PY_SEG_WORD_SIZE, "word size %u, this process uses %u", h->word_size,
                    (unsigned)sizeof(void *));
    if (h->cpu_slots != rseq_py_nslots)
        return FAIL(RSEQ_PY_SEG_CPU_SLOTS, "made for %u CPU slots, this machine has %u",
                    h->cpu_slots, rseq_py_nslots);
    if (h->total_size != size)
        return FAIL(h->total_size > size ? RSEQ_PY_SEG_TRUNCATED : RSEQ_PY_SEG_GEOMETRY,
                    "%sits header says %llu bytes, the file has %llu",
                    h->total_size > size ? "truncated: " : "", (unsigned long long)h->total_size,
                    (unsigned long long)size);
    if (kind == RSEQ_PY_KIND_COUNTER) {
        uint64_t n = h->geometry[0];
        if (n == 0 || n > RSEQ_PY_COUNTER_MAX || h->geometry[1] != rseq_py_counter_stride((uint32_t)n) ||
            rseq_py_counter_shared_size((uint32_t)n) != size)
            return FAIL(RSEQ_PY_SEG_GEOMETRY, "counter geometry (size %llu, stride %llu) does not "
                        "match its %llu bytes", (unsigned long long)n,
                        (unsigned long long)h->geometry[1], (unsigned long long)size);
    }
    if (kind == RSEQ_PY_KIND_FREELIST && !rseq_py_freelist_geometry_ok(h, size))
        return FAIL(RSEQ_PY_SEG_GEOMETRY, "freelist geometry (capacity %llu, per_cpu %llu, stride "
                    "%llu) does not match its %llu bytes", (unsigned long long)h->geometry[0],
                    (unsigned long long)h->geometry[1], (unsigned long long)h->geometry[2],
                    (unsigned long long)size);
    return RSEQ_PY_SEG_OK;
}
