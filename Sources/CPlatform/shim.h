#ifndef PORTCULLIS_CPLATFORM_SHIM_H
#define PORTCULLIS_CPLATFORM_SHIM_H
// Small Linux facts Swift cannot reach directly. sched_getaffinity(3) is only declared under _GNU_SOURCE, which the
// Glibc module is not built with, and syscall(2) is variadic; so the raw system call is wrapped here.
#include <unistd.h>
#include <sys/syscall.h>

/// The number of CPUs in this process's affinity mask (taskset, cpusets), or 0 if it cannot be read.
static inline int cplatform_affinity_cpu_count(void) {
    unsigned long mask[64] = {0};
    long bytes = syscall(SYS_sched_getaffinity, 0, sizeof(mask), mask);
    if (bytes <= 0) return 0;
    int count = 0;
    for (long i = 0; i < bytes / (long)sizeof(unsigned long); i++) count += __builtin_popcountl(mask[i]);
    return count;
}

#endif
