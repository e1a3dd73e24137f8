/* Thread CPU time on macOS: the thread's Mach port, read with
 * thread_info(THREAD_BASIC_INFO) (user + system time) from any thread.
 * pthread_mach_thread_np does not add a port reference, so nothing is
 * leaked and nothing needs releasing. */
#if defined(__APPLE__)

#define _DARWIN_C_SOURCE 1

#include <errno.h>
#include <mach/mach.h>
#include <pthread.h>

#include "lw_threadcpu.h"

int lw_threadcpu_capture_self(lw_threadcpu *t)
{
    mach_port_t port = pthread_mach_thread_np(pthread_self());
    t->valid = 0;
    if (port == MACH_PORT_NULL)
        return ESRCH;
    t->id = (int64_t)port;
    t->tid = 0;
    t->valid = 1;
    return 0;
}

int lw_threadcpu_read_ns(const lw_threadcpu *t, int64_t *out_ns)
{
    thread_basic_info_data_t info;
    mach_msg_type_number_t count = THREAD_BASIC_INFO_COUNT;
    if (!t->valid)
        return EINVAL;
    if (thread_info((thread_act_t)t->id, THREAD_BASIC_INFO, (thread_info_t)&info,
                    &count) != KERN_SUCCESS)
        return ESRCH;
    *out_ns = ((int64_t)info.user_time.seconds + info.system_time.seconds) * 1000000000
              + ((int64_t)info.user_time.microseconds + info.system_time.microseconds) * 1000;
    return 0;
}

#else
typedef int lw_threadcpu_macos_unused;
#endif
