#include "ps_net.h"

#include "ps_err.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_cidr(const char *cidr, uint32_t *net, uint32_t *mask)
{
    char buf[64];
    const char *slash = strchr(cidr, '/');
    size_t len = slash ? (size_t)(slash - cidr) : strlen(cidr);
    if (len >= sizeof buf) {
        return PS_EINVAL;
    }
    memcpy(buf, cidr, len);
    buf[len] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, buf, &a) != 1) {
        return PS_EINVAL;
    }
    long bits = 32;
    if (slash) {
        char *end;
        bits = strtol(slash + 1, &end, 10);
        if (*end != '\0' || end == slash + 1 || bits < 0 || bits > 32) {
            return PS_EINVAL;
        }
    }
    *mask = bits == 0 ? 0 : htonl(~(uint32_t)0 << (32 - bits));
    *net = a.s_addr & *mask;
    return 0;
}

static int matches(const struct ifaddrs *ifa, const char *iface, int have_cidr, uint32_t net,
                   uint32_t mask)
{
    if (!ifa->ifa_addr || ifa->ifa_addr->sa_family != AF_INET || !(ifa->ifa_flags & IFF_UP)) {
        return 0;
    }
    uint32_t a = ((const struct sockaddr_in *)ifa->ifa_addr)->sin_addr.s_addr;
    if (iface) {
        return strcmp(ifa->ifa_name, iface) == 0;
    }
    if (have_cidr) {
        return (a & mask) == net;
    }
    return !(ifa->ifa_flags & IFF_LOOPBACK);
}

int ps_net_pick_addr(const char *iface, const char *cidr, int single_host, char *out, size_t cap)
{
    uint32_t net = 0, mask = 0;
    if (cidr && parse_cidr(cidr, &net, &mask) != 0) {
        ps_error_set("--bind: '%s' is not an IPv4 address or CIDR (e.g. 10.1.0.0/16)", cidr);
        return PS_EINVAL;
    }
    if (!iface && !cidr && single_host) {
        snprintf(out, cap, "127.0.0.1");
        return 0;
    }
    struct ifaddrs *all, *ifa;
    if (getifaddrs(&all) != 0) {
        ps_error_set("getifaddrs failed");
        return PS_EIO;
    }
    for (ifa = all; ifa; ifa = ifa->ifa_next) {
        if (matches(ifa, iface, cidr != NULL, net, mask)) {
            inet_ntop(AF_INET, &((const struct sockaddr_in *)ifa->ifa_addr)->sin_addr, out,
                      (socklen_t)cap);
            freeifaddrs(all);
            return 0;
        }
    }
    freeifaddrs(all);
    if (iface) {
        ps_error_set("--iface %s: no such interface with an IPv4 address that is up", iface);
    } else if (cidr) {
        ps_error_set("--bind %s: no local IPv4 address in that subnet", cidr);
    } else {
        ps_error_set("no non-loopback IPv4 interface is up; use --iface or --bind");
    }
    return PS_ENOENT;
}
