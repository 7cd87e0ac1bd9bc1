#!/usr/bin/env python3
"""Prints a loopback port nothing listens on, for a broker the interop scripts start.

The port comes from below the kernel's ephemeral range: a port that bind(0) handed out and
released can be handed out again (to a client's source port, say) before the broker binds it;
a port below the range is only ever taken by an explicit bind. Same rule as the Rust tests'
test_support::process::free_loopback_addr.
"""
import os
import socket

try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(n) for n in f.read().split())
except (OSError, ValueError):
    low, high = 32768, 60999

if low >= 12000:
    first, count = 10000, low - 10000
else:
    first, count = high + 1, 65535 - high

start = (os.getpid() * 7919) % count
for i in range(count):
    port = first + (start + i) % count
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit(f"no free loopback port in {first}..{first + count}")
