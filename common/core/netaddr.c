#include "core/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "core/util.h"

static bool v4_is_public(uint32_t a)
{
    static const struct {
        uint32_t net, mask;
    } blocked[] = {
        {0x00000000, 0xff000000}, /* 0.0.0.0/8 "this network" */
        {0x0a000000, 0xff000000}, /* 10/8 */
        {0x64400000, 0xffc00000}, /* 100.64/10 CGNAT */
        {0x7f000000, 0xff000000}, /* 127/8 loopback */
        {0xa9fe0000, 0xffff0000}, /* 169.254/16 link-local, metadata */
        {0xac100000, 0xfff00000}, /* 172.16/12 */
        {0xc0000000, 0xffffff00}, /* 192.0.0/24 IETF protocol assignments */
        {0xc0000200, 0xffffff00}, /* 192.0.2/24 TEST-NET-1 */
        {0xc0a80000, 0xffff0000}, /* 192.168/16 */
        {0xc6120000, 0xfffe0000}, /* 198.18/15 benchmarking */
        {0xc6336400, 0xffffff00}, /* 198.51.100/24 TEST-NET-2 */
        {0xcb007100, 0xffffff00}, /* 203.0.113/24 TEST-NET-3 */
        {0xe0000000, 0xf0000000}, /* 224/4 multicast */
        {0xf0000000, 0xf0000000}, /* 240/4 reserved, broadcast */
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(blocked); i++)
        if ((a & blocked[i].mask) == blocked[i].net)
            return false;
    return true;
}

static bool v6_is_public(const uint8_t *b)
{
    static const uint8_t zero[16];
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (memcmp(b, zero, 15) == 0 && (b[15] == 0 || b[15] == 1))
        return false; /* :: and ::1 */
    if (memcmp(b, mapped, 12) == 0 || memcmp(b, zero, 12) == 0) {
        /* IPv4-mapped (::ffff:a.b.c.d) and the deprecated IPv4-compatible (::a.b.c.d). */
        uint32_t a = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];

        return v4_is_public(a);
    }
    if (b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && memcmp(b + 4, zero, 8) == 0) {
        /* 64:ff9b::/96 NAT64 embeds an IPv4 address too. */
        uint32_t a = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];

        return v4_is_public(a);
    }
    if (b[0] == 0x20 && b[1] == 0x02) {
        /* 2002::/16 6to4 embeds an IPv4 address after the prefix. */
        uint32_t a = (uint32_t)b[2] << 24 | (uint32_t)b[3] << 16 | (uint32_t)b[4] << 8 | b[5];

        return v4_is_public(a);
    }
    if ((b[0] & 0xfe) == 0xfc)
        return false; /* fc00::/7 unique local */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return false; /* fe80::/10 link-local */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
        return false; /* fec0::/10 site-local (deprecated) */
    if (b[0] == 0xff)
        return false; /* multicast */
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        return false; /* 2001:db8::/32 documentation */
    return true;
}

bool netaddr_is_public(const struct sockaddr *sa)
{
    if (!sa)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

        return v4_is_public(ntohl(in->sin_addr.s_addr));
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;

        return v6_is_public(in6->sin6_addr.s6_addr);
    }
    return false;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

bool netaddr_host_allowed(const char *host, bool *is_literal)
{
    char literal[64];
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    size_t n;

    *is_literal = false;
    if (!host || !*host)
        return false;
    n = strlen(host);
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
        if (n - 2 >= sizeof(literal))
            return false;
        memcpy(literal, host + 1, n - 2);
        literal[n - 2] = '\0';
    } else if (!str_copy(literal, sizeof(literal), host)) {
        literal[0] = '\0';
    }
    memset(&in, 0, sizeof(in));
    memset(&in6, 0, sizeof(in6));
    if (literal[0] && inet_pton(AF_INET, literal, &in.sin_addr) == 1) {
        in.sin_family = AF_INET;
        *is_literal = true;
        return netaddr_is_public((const struct sockaddr *)&in);
    }
    if (literal[0] && inet_pton(AF_INET6, literal, &in6.sin6_addr) == 1) {
        in6.sin6_family = AF_INET6;
        *is_literal = true;
        return netaddr_is_public((const struct sockaddr *)&in6);
    }
    {
        /* A trailing dot names the same host. */
        char name[256];

        if (!str_copy(name, sizeof(name), host))
            return false;
        n = strlen(name);
        if (n > 1 && name[n - 1] == '.')
            name[n - 1] = '\0';
        if (strcasecmp(name, "localhost") == 0 || ends_with(name, ".localhost") ||
            ends_with(name, ".local") || ends_with(name, ".internal") ||
            strcasecmp(name, "metadata") == 0)
            return false;
    }
    return true;
}
