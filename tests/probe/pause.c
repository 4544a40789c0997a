/* The pod sandbox's process for the CRI suite: holds the pod's namespaces
 * until it is told to stop, and reaps any child handed to it (it is PID 1 of
 * the pod's pid namespace when the pod shares one). */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
	(void)sig;
	_exit(0);
}

static void reap(int sig) {
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(void) {
	signal(SIGTERM, stop);
	signal(SIGINT, stop);
	signal(SIGCHLD, reap);
	for (;;)
		pause();
}
