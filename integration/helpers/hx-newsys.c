/* hx-newsys [--hide] [--openat2]: the glibc fallbacks of field case V02.
 *   --hide     first install an own seccomp filter answering ENOSYS to clone3 and faccessat2,
 *              so glibc falls back to clone and faccessat and nothing outside sees the new calls
 *   --openat2  also open /etc/passwd with openat2 (437), so a learned profile names it
 * Then (1) pthread_create + join: "thread ok" or "thread errno N"; (2) faccessat(AT_FDCWD,
 * "/etc/passwd", R_OK, AT_EACCESS): "access 0" or "access errno N"; without --hide also (3) a
 * raw clone3(NULL, 0): "clone3 errno N" (EINVAL 22 when the kernel sees it, ENOSYS 38 when a
 * filter answers as if it did not exist, EPERM 1 when a filter forbids it). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_faccessat2
#define SYS_faccessat2 439
#endif

static int hide(void) {
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_faccessat2, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
  };
  struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

static void *thread_main(void *arg) { return arg; }

int main(int argc, char **argv) {
  int hidden = 0, with_openat2 = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--hide") == 0) hidden = 1;
    else if (strcmp(argv[i], "--openat2") == 0) with_openat2 = 1;
    else {
      fprintf(stderr, "hx-newsys: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (hidden && hide() != 0) {
    printf("hide errno %d\n", errno);
    return 1;
  }
  if (with_openat2) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY;
    long fd = syscall(SYS_openat2, AT_FDCWD, "/etc/passwd", &how, sizeof how);
    if (fd < 0) printf("openat2 errno %d\n", errno);
    else {
      printf("openat2 ok\n");
      close((int)fd);
    }
  }
  pthread_t t;
  int rc = pthread_create(&t, NULL, thread_main, NULL);
  if (rc == 0 && pthread_join(t, NULL) == 0) printf("thread ok\n");
  else printf("thread errno %d\n", rc);
  if (faccessat(AT_FDCWD, "/etc/passwd", R_OK, AT_EACCESS) == 0) printf("access 0\n");
  else printf("access errno %d\n", errno);
  if (!hidden) {
    errno = 0;
    long r = syscall(SYS_clone3, NULL, 0);
    if (r == 0) _exit(0); /* cannot happen with a NULL argument */
    printf("clone3 errno %d\n", r < 0 ? errno : 0);
  }
  fflush(stdout);
  return 0;
}
