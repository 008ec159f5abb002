/* A tree of sleeping threads: a root process, PROCESSES children, each with THREADS
 * threads (its main thread included), every one blocked in pause(). The root prints
 * "ready <pid> <pid>...\n" on stdout once every child has started all its threads, then
 * waits. On SIGTERM (or when stdin closes) the root kills its children by pid, reaps
 * them and exits; each child also dies with its parent (PR_SET_PDEATHSIG).
 *
 *   gcc -O2 -pthread -o sleeping_tree sleeping_tree.c
 *   ./sleeping_tree 300 63      # 300 processes x 63 threads, 18,901 threads in all
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void *sleeper(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PROCESSES THREADS_PER_PROCESS\n", argv[0]);
        return 2;
    }
    int processes = atoi(argv[1]);
    int threads = atoi(argv[2]);
    if (processes < 0 || threads < 1) {
        fprintf(stderr, "PROCESSES must be >= 0 and THREADS_PER_PROCESS >= 1\n");
        return 2;
    }
    pid_t *pids = calloc((size_t)processes + 1, sizeof(pid_t));
    int ready[2];
    if (!pids || pipe(ready) != 0) return 1;
    pid_t root = getpid();
    for (int i = 0; i < processes; i++) {
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 1; }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != root) _exit(1);
            close(ready[0]);
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setstacksize(&attr, 64 * 1024);
            for (int t = 1; t < threads; t++) {
                pthread_t thread;
                if (pthread_create(&thread, &attr, sleeper, NULL) != 0) _exit(1);
            }
            char byte = 'r';
            if (write(ready[1], &byte, 1) != 1) _exit(1);
            close(ready[1]);
            for (;;) pause();
        }
        pids[i] = pid;
    }
    close(ready[1]);
    int started = 0;
    char byte;
    while (started < processes) {
        ssize_t n = read(ready[0], &byte, 1);
        if (n == 1) { started++; continue; }
        if (n < 0 && errno == EINTR) continue;
        fprintf(stderr, "only %d of %d children started their threads\n", started, processes);
        for (int i = 0; i < processes; i++) kill(pids[i], SIGKILL);
        return 1;
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_term;
    sigaction(SIGTERM, &action, NULL);
    printf("ready %d", (int)root);
    for (int i = 0; i < processes; i++) printf(" %d", (int)pids[i]);
    printf("\n");
    fflush(stdout);
    /* Wait for SIGTERM or for stdin to close (the parent went away). */
    while (!stop) {
        ssize_t n = read(0, &byte, 1);
        if (n == 0) break;
        if (n < 0 && errno != EINTR) break;
    }
    for (int i = 0; i < processes; i++) kill(pids[i], SIGKILL);
    for (int i = 0; i < processes; i++) waitpid(pids[i], NULL, 0);
    return 0;
}
