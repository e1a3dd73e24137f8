/*
 * lw_mem: large arrays of native memory taken straight from the kernel
 * (anonymous mmap), not from malloc, so that they do not disturb the
 * application's heap: glibc raises its mmap threshold each time it frees a
 * large mmapped chunk, after which the application's own 128-256 KiB
 * buffers land on the brk heap instead (a 3x swing seen in an echo
 * benchmark). Pages are zero until written and count as resident only once
 * touched, so a capacity grown ahead of need costs address space, not memory.
 *   lw_mem_linux.c  mmap, mremap to grow (no copy)
 *   lw_mem_macos.c  mmap, a new mapping + copy to grow
 * Under AddressSanitizer both use calloc/realloc, so the arrays keep their
 * redzones.
 */
#ifndef LW_MEM_H
#define LW_MEM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* `size` zeroed bytes, or NULL. */
void *lw_mem_alloc(size_t size);
/* Grow an lw_mem_alloc'ed array from `old_size` to `new_size` bytes (the
 * new part zeroed); it may move. NULL on failure, the old array intact. */
void *lw_mem_grow(void *p, size_t old_size, size_t new_size);
void lw_mem_free(void *p, size_t size);

#ifdef __cplusplus
}
#endif

#endif
