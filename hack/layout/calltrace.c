// calltrace: which functions of a binary one run calls, in the order of their
// first call. Used by hack/layout/profile.sh to lay out the release binaries.
//
//   calltrace SYMBOLS OUT -- PROGRAM [ARGS...]
//
// SYMBOLS holds "HEXADDR NAME" lines (`nm` of PROGRAM, link-time addresses).
// calltrace execs PROGRAM in its own process, so that whoever started
// calltrace sees PROGRAM's pid, exit status and file descriptors (containerd
// waits for a shim's `start` to exit and reads its stdout). A detached
// grandchild traces it: it puts a one-shot breakpoint (int3) on the first
// byte of every function once PROGRAM is executed, and on each hit writes the
// function's name to OUT.part, puts the byte back and lets the process go on.
// It follows forks, clones and threads; a process that executes another
// program is let go. When no traced process is left, OUT.part becomes OUT.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

struct sym {
  uint64_t addr;
  char *name;
  unsigned char orig;
  int hit;
};
static struct sym *syms;
static size_t nsyms;
static uint64_t base;

static int by_addr(const void *a, const void *b) {
  uint64_t x = ((const struct sym *)a)->addr, y = ((const struct sym *)b)->addr;
  return x < y ? -1 : x > y;
}

static struct sym *lookup(uint64_t a) {
  size_t lo = 0, hi = nsyms;
  while (lo < hi) {
    size_t m = lo + (hi - lo) / 2;
    if (syms[m].addr + base < a) lo = m + 1; else hi = m;
  }
  return lo < nsyms && syms[lo].addr + base == a ? &syms[lo] : NULL;
}

static void read_symbols(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) { perror(path); exit(2); }
  char *line = NULL;
  size_t len = 0, cap = 0;
  while (getline(&line, &len, f) > 0) {
    char *end;
    uint64_t a = strtoull(line, &end, 16);
    if (*end != ' ') continue;
    char *name = end + 1;
    name[strcspn(name, "\n")] = 0;
    if (nsyms == cap) {
      cap = cap ? 2 * cap : 8192;
      syms = realloc(syms, cap * sizeof *syms);
      if (!syms) exit(2);
    }
    syms[nsyms++] = (struct sym){ .addr = a, .name = strdup(name) };
  }
  free(line);
  fclose(f);
  qsort(syms, nsyms, sizeof *syms, by_addr);
  size_t w = 0;  // one breakpoint per address: aliases share it
  for (size_t i = 0; i < nsyms; i++)
    if (!w || syms[w - 1].addr != syms[i].addr) syms[w++] = syms[i];
  nsyms = w;
}

// The load address of a position-independent PROGRAM: its first mapping.
static uint64_t load_base(pid_t pid) {
  char path[64], exe[4096], line[4608];
  snprintf(path, sizeof path, "/proc/%d/exe", pid);
  ssize_t n = readlink(path, exe, sizeof exe - 1);
  if (n < 0) return 0;
  exe[n] = 0;
  snprintf(path, sizeof path, "/proc/%d/maps", pid);
  FILE *f = fopen(path, "r");
  uint64_t lo = 0;
  while (f && fgets(line, sizeof line, f)) {
    size_t l = strcspn(line, "\n");
    line[l] = 0;
    if (l >= (size_t)n && !strcmp(line + l - n, exe)) { sscanf(line, "%lx", &lo); break; }
  }
  if (f) fclose(f);
  char hdr[18] = {0};
  int fd = open(exe, O_RDONLY);
  if (fd >= 0) { if (read(fd, hdr, sizeof hdr) != sizeof hdr) hdr[16] = 0; close(fd); }
  return hdr[16] == 3 /* ET_DYN */ ? lo : 0;
}

static void arm(pid_t pid) {
  base = load_base(pid);
  for (size_t i = 0; i < nsyms; i++) {
    uint64_t a = syms[i].addr + base;
    errno = 0;
    long word = ptrace(PTRACE_PEEKTEXT, pid, a, 0);
    if (errno) continue;
    syms[i].orig = word & 0xff;
    ptrace(PTRACE_POKETEXT, pid, a, (word & ~0xffL) | 0xcc);
  }
}

static void trace(pid_t root, FILE *out) {
  int armed = 0, status;
  for (;;) {
    pid_t p = waitpid(-1, &status, __WALL);
    if (p < 0) {
      if (errno == EINTR) continue;
      return;  // ECHILD: nothing left to trace
    }
    if (!WIFSTOPPED(status)) continue;
    int sig = WSTOPSIG(status), event = status >> 16;
    if (event == PTRACE_EVENT_EXEC) {
      if (p == root && !armed) { arm(p); armed = 1; ptrace(PTRACE_CONT, p, 0, 0); }
      else ptrace(PTRACE_DETACH, p, 0, 0);
      continue;
    }
    if (event == PTRACE_EVENT_STOP) {
      // A group stop (SIGSTOP and the like) or a new child's first stop.
      if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)
        ptrace(PTRACE_LISTEN, p, 0, 0);
      else
        ptrace(PTRACE_CONT, p, 0, 0);
      continue;
    }
    if (event) { ptrace(PTRACE_CONT, p, 0, 0); continue; }
    if (sig == SIGTRAP && armed) {
      struct user_regs_struct r;
      ptrace(PTRACE_GETREGS, p, 0, &r);
      struct sym *s = lookup(r.rip - 1);
      if (s) {
        r.rip -= 1;
        ptrace(PTRACE_SETREGS, p, 0, &r);
        errno = 0;
        long word = ptrace(PTRACE_PEEKTEXT, p, r.rip, 0);
        if (!errno && (word & 0xff) == 0xcc)
          ptrace(PTRACE_POKETEXT, p, r.rip, (word & ~0xffL) | s->orig);
        if (!s->hit) { s->hit = 1; fprintf(out, "%s\n", s->name); }
        ptrace(PTRACE_CONT, p, 0, 0);
        continue;
      }
    }
    ptrace(PTRACE_CONT, p, 0, sig);
  }
}

int main(int argc, char **argv) {
  if (argc < 5 || strcmp(argv[3], "--")) {
    fprintf(stderr, "usage: calltrace SYMBOLS OUT -- PROGRAM [ARGS...]\n");
    return 2;
  }
  read_symbols(argv[1]);
  int ready[2];
  if (pipe2(ready, O_CLOEXEC)) return 2;
  pid_t self = getpid(), child = fork();
  if (child < 0) return 2;
  if (child == 0) {
    if (fork() != 0) _exit(0);  // the tracer is a grandchild: nobody waits for it
    char part[4096];
    snprintf(part, sizeof part, "%s.part", argv[2]);
    FILE *out = fopen(part, "w");
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0); dup2(null, 1); dup2(null, 2);  // a reader of PROGRAM's output sees its end
    long opts = PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC;
    char ok = out && ptrace(PTRACE_SEIZE, self, 0, opts) == 0;
    if (write(ready[1], &ok, 1) != 1 || !ok) _exit(1);
    close(ready[1]);
    trace(self, out);
    _exit(fclose(out) || rename(part, argv[2]) ? 1 : 0);
  }
  waitpid(child, NULL, 0);
  close(ready[1]);
  char ok = 0;
  if (read(ready[0], &ok, 1) != 1 || !ok) {
    fprintf(stderr, "calltrace: could not trace (output %s)\n", argv[2]);
    return 2;
  }
  execvp(argv[4], argv + 4);
  perror(argv[4]);
  return 127;
}
