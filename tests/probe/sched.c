/* Prints the calling process's scheduling policy and flags as sched_getattr(2)
 * reports them: "policy N flags 0xF". Used inside test containers. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct sched_attr_v1 {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
};

int main(void) {
    struct sched_attr_v1 a;
    memset(&a, 0, sizeof a);
    if (syscall(SYS_sched_getattr, 0, &a, sizeof a, 0) != 0) {
        perror("sched_getattr");
        return 1;
    }
    printf("policy %u flags 0x%llx\n", a.sched_policy, (unsigned long long)a.sched_flags);
    return 0;
}
