/*
 * worker.h - the Cloud Tasks push target: verifies the push, hands the task
 * to the batch domain, answers with the status the queue understands.
 */
#ifndef WORKER_WORKER_H
#define WORKER_WORKER_H

#include "app/service.h"

extern const struct service_def worker_service;

#endif
