/*
 * netaddr.h - which network addresses partner-supplied URLs may reach.
 *
 * Outbound fetches of partner URLs must never reach our own network:
 * loopback, private ranges, link-local (the metadata server lives at
 * 169.254.169.254), carrier-grade NAT, multicast, reserved, and the IPv6
 * equivalents including IPv4-mapped forms.
 */
#ifndef CORE_NETADDR_H
#define CORE_NETADDR_H

#include <stdbool.h>
#include <sys/socket.h>

/* True when sa (AF_INET or AF_INET6) is a public unicast address. */
bool netaddr_is_public(const struct sockaddr *sa);

/*
 * Classifies a URL host as written (no DNS): sets *is_literal when host is
 * an IPv4/IPv6 literal (brackets allowed) and returns whether it is allowed:
 * literals must be public; names must not be "localhost", end in
 * ".localhost", ".local" or ".internal", or be the metadata server's name.
 * Hostnames that pass still need the after-DNS check at connect time.
 */
bool netaddr_host_allowed(const char *host, bool *is_literal);

#endif
