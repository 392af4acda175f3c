/* For the `writepath` scenario's --flush-delay-us: loaded into PostgreSQL with LD_PRELOAD, it makes every
   fsync and fdatasync wait SLOW_FLUSH_US microseconds first, as a flush to a cloud disk does. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void wait_flush(void) {
    const char *us = getenv("SLOW_FLUSH_US");
    long n = us ? atol(us) : 0;
    struct timespec t = { n / 1000000, (n % 1000000) * 1000 };
    nanosleep(&t, 0);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    wait_flush();
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    wait_flush();
    return real(fd);
}
