/* lw_hdr_alloc: memory for histograms that leaves the application's heap
 * as it found it. Included by lw_hdr.c alone (a header, so that every build
 * that compiles lw_hdr.c gets it with no source list to change); that file
 * defines _DEFAULT_SOURCE for it, before any system header.
 *
 * A histogram at loopwatch's default layout is 184 KiB. From malloc, glibc
 * serves it by mmap (above its 128 KiB threshold), and freeing such a chunk
 * raises the threshold to the chunk's size: from then on the application's
 * own allocations below that size come from the brk heap instead, and their
 * speed changes with the heap's state (asyncio's 256 KiB receive buffers
 * moving there swung an echo benchmark's CPU per request 3x). So a
 * histogram at least as large as glibc's default threshold is mapped here
 * directly, with mmap/munmap, which malloc never sees; smaller ones come
 * from calloc as before (glibc keeps them on its heap whatever the
 * threshold, and their free moves nothing). POSIX mmap, the same on Linux
 * and macOS. */
#ifndef LW_HDR_ALLOC_H
#define LW_HDR_ALLOC_H

#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#if !defined(MAP_ANONYMOUS) && defined(MAP_ANON)
#define MAP_ANONYMOUS MAP_ANON
#endif

/* The sanitizer build: ASan knows nothing of the slack between the end of
 * a histogram and the end of its last page; poisoning it makes an overrun
 * of the counts array as visible as it is on a malloc'd block. */
#if defined(__SANITIZE_ADDRESS__)
#define LW_HDR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LW_HDR_ASAN 1
#endif
#endif
#ifdef LW_HDR_ASAN
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#define ASAN_UNPOISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#endif

/* glibc's default M_MMAP_THRESHOLD: from this size on, histograms are mapped. */
#define LW_HDR_MAP_MIN ((size_t)128 * 1024)

static size_t lw_hdr__mapped_size(size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (size + page - 1) / page * page;
}

/* `size` zeroed bytes, 16-byte aligned (page-aligned when mapped), or NULL
 * when the system has no memory (or mappings) left. */
static void *lw_hdr__alloc_zeroed(size_t size) {
    if (size < LW_HDR_MAP_MIN) return calloc(1, size);
    size_t mapped = lw_hdr__mapped_size(size);
    /* Anonymous pages are zero, and stay unbacked until written: a
     * histogram takes memory only for the buckets it uses. */
    void *p = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    ASAN_POISON_MEMORY_REGION((char *)p + size, mapped - size);
    return p;
}

/* Release what lw_hdr__alloc_zeroed(size) returned, given the same size. */
static void lw_hdr__alloc_free(void *p, size_t size) {
    if (size < LW_HDR_MAP_MIN) {
        free(p);
        return;
    }
    size_t mapped = lw_hdr__mapped_size(size);
    ASAN_UNPOISON_MEMORY_REGION(p, mapped);
    munmap(p, mapped);
}

#endif
