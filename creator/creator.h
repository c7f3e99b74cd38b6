/*
 * creator.h - the partner-facing service: routes over the batch domain.
 */
#ifndef CREATOR_CREATOR_H
#define CREATOR_CREATOR_H

#include "app/service.h"

extern const struct service_def creator_service;

#endif
