/* lw_mem on Linux: anonymous mappings, grown by mremap. See lw_mem.h. */
#if defined(__linux__)

#define _GNU_SOURCE /* mremap */

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "lw_mem.h"

#if defined(__SANITIZE_ADDRESS__)
#define LW_MEM_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LW_MEM_MALLOC 1
#endif
#endif

void *lw_mem_alloc(size_t size)
{
#ifdef LW_MEM_MALLOC
    return calloc(1, size ? size : 1);
#else
    void *p;
    if (size == 0)
        size = 1;
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
#endif
}

void *lw_mem_grow(void *p, size_t old_size, size_t new_size)
{
#ifdef LW_MEM_MALLOC
    char *q = realloc(p, new_size);
    if (q && new_size > old_size)
        memset(q + old_size, 0, new_size - old_size);
    return q;
#else
    /* The kernel zero-fills what the mapping gains. */
    void *q = mremap(p, old_size ? old_size : 1, new_size, MREMAP_MAYMOVE);
    return q == MAP_FAILED ? NULL : q;
#endif
}

void lw_mem_free(void *p, size_t size)
{
    if (!p)
        return;
#ifdef LW_MEM_MALLOC
    (void)size;
    free(p);
#else
    munmap(p, size ? size : 1);
#endif
}

#else
typedef int lw_mem_linux_unused;
#endif
