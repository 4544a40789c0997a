/* Calls one raw system call with zero arguments and prints how it ended:
 * "ok RET" or "errno NAME" (ENOSYS, EPERM...). Used inside test containers,
 * whose busybox rootfs has no way to issue an arbitrary system call.
 * Usage: syscall NUMBER */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *name(int e) {
    switch (e) {
    case ENOSYS: return "ENOSYS";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case EFAULT: return "EFAULT";
    case EBADF: return "EBADF";
    default: return "OTHER";
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: syscall NUMBER\n");
        return 2;
    }
    long nr = strtol(argv[1], NULL, 0);
    errno = 0;
    long ret = syscall(nr, 0, 0, 0, 0, 0, 0);
    if (ret < 0)
        printf("errno %s\n", name(errno));
    else
        printf("ok %ld\n", ret);
    return 0;
}
