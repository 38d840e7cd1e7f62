/* hx-sys OP...: makes one call per OP and prints its result or errno, one line each.
 *   echo WORD   prints WORD (write only: a benign call for a learned baseline)
 *   ptrace      ptrace(PTRACE_PEEKUSER, getpid()): ESRCH (3) when allowed, not traced
 *   mount       mount(NULL, NULL, NULL, 0, NULL): EFAULT (14) when allowed
 *   unshare     unshare(0): 0 when allowed (a no-op)
 *   keyctl      keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0): >= 0 or an errno
 *                other than EPERM when allowed
 * A call denied by a seccomp filter prints "errno 1" (EPERM). */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *op, long rc) {
  if (rc < 0)
    printf("%s errno %d\n", op, errno);
  else
    printf("%s ok\n", op);
  fflush(stdout);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *op = argv[i];
    errno = 0;
    if (strcmp(op, "echo") == 0 && i + 1 < argc) {
      printf("%s\n", argv[++i]);
      fflush(stdout);
    } else if (strcmp(op, "ptrace") == 0) {
      report(op, syscall(SYS_ptrace, PTRACE_PEEKUSER, getpid(), 0, 0));
    } else if (strcmp(op, "mount") == 0) {
      report(op, syscall(SYS_mount, NULL, NULL, NULL, 0, NULL));
    } else if (strcmp(op, "unshare") == 0) {
      report(op, syscall(SYS_unshare, 0));
    } else if (strcmp(op, "keyctl") == 0) {
      report(op, syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0));
    } else {
      fprintf(stderr, "hx-sys: unknown op %s\n", op);
      return 2;
    }
  }
  return 0;
}
