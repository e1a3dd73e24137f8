/* A thread's scheduler state on macOS: thread_info(THREAD_BASIC_INFO)'s
 * run_state, given Linux's letters. See lw_threadcpu.h. */
#if defined(__APPLE__)

#define _DARWIN_C_SOURCE 1

#include <errno.h>
#include <mach/mach.h>

#include "lw_threadcpu.h"

int lw_threadcpu_run_state(const lw_threadcpu *t, char *out_state)
{
    thread_basic_info_data_t info;
    mach_msg_type_number_t count = THREAD_BASIC_INFO_COUNT;
    if (!t->valid)
        return EINVAL;
    if (thread_info((thread_act_t)t->id, THREAD_BASIC_INFO, (thread_info_t)&info,
                    &count) != KERN_SUCCESS)
        return ESRCH;
    switch (info.run_state) {
    case TH_STATE_RUNNING:
        *out_state = 'R';
        break;
    case TH_STATE_STOPPED:
        *out_state = 'T';
        break;
    case TH_STATE_WAITING:
        *out_state = 'S';
        break;
    case TH_STATE_UNINTERRUPTIBLE:
        *out_state = 'D';
        break;
    default:
        *out_state = '?';
        break;
    }
    return 0;
}

#else
typedef int lw_threadstate_macos_unused;
#endif
