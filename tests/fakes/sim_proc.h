/*
 * sim_proc.h - provider-sim as a child process of a test: started on a free
 * loopback port with the test's environment plus overrides, waited for on
 * /healthz, stopped with SIGTERM (it must drain and exit 0).
 */
#ifndef FAKES_SIM_PROC_H
#define FAKES_SIM_PROC_H

#include <stdbool.h>
#include <sys/types.h>

struct sim_proc {
    pid_t pid;
    char url[64]; /* "http://127.0.0.1:PORT" */
};

/*
 * Starts bin with environ minus the variables named in overrides, plus
 * overrides ("NAME=value", NULL-terminated; PORT and BIND_ADDRESS are set
 * here). False when it did not answer /healthz within 20 s (it is killed).
 */
bool sim_proc_start(struct sim_proc *p, const char *bin, const char *const *overrides);

/*
 * SIGTERM, then waits up to 20 s (SIGKILL after). Returns the exit status
 * (0 is a clean stop), or -1 when it had to be killed or was not running.
 */
int sim_proc_stop(struct sim_proc *p);

#endif
