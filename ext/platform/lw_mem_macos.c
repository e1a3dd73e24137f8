/* lw_mem where there is no mremap (macOS, other POSIX systems): anonymous
 * mappings, grown by mapping anew and copying. See lw_mem.h. */
#if !defined(__linux__)

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
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANON, -1, 0);
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
    void *q = lw_mem_alloc(new_size);
    if (!q)
        return NULL;
    memcpy(q, p, old_size < new_size ? old_size : new_size);
    lw_mem_free(p, old_size);
    return q;
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
typedef int lw_mem_macos_unused;
#endif
