/*
 * ps_net: choosing the address a server advertises for its data port.
 *
 * The rule (documented in docs/operations.md): an explicit interface name
 * (--iface) or subnet (--bind CIDR) wins; otherwise, when every rank of the
 * job runs on this host, loopback; otherwise the first IPv4 address of an
 * interface that is up and not loopback.  Never 127.0.0.1 for a multi-host
 * job.  A choice that matches nothing is an error naming what was asked.
 */
#ifndef PS_NET_H
#define PS_NET_H

#include <stddef.h>

/* iface and cidr may be NULL.  Writes a dotted IPv4 address to out. */
int ps_net_pick_addr(const char *iface, const char *cidr, int single_host, char *out, size_t cap);

#endif
