#!/usr/bin/env python3
"""A network link with a fixed one-way delay between this namespace and a new one, for
benchmarks that need a provider far away (this machine's kernel has no netem qdisc).

Two TUN devices, one here and one moved into network namespace NETNS, joined by this process:
every IP packet read from one side is written to the other DELAY_MS later, in order. Both ends
are the kernel's own TCP stacks, so round trips, slow start and its restart after an idle
period behave as over a real link of that round-trip time (no loss, no bandwidth limit beyond
this process). Addresses: 10.77.0.1 here, 10.77.0.2 in NETNS.

Usage (root): benches/netdelay.py NETNS DELAY_MS   (runs until killed; removes NETNS on exit)
"""

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections import deque

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
HERE, THERE = "10.77.0.1", "10.77.0.2"


def tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def sh(*args):
    subprocess.run(args, check=True)


def main():
    netns, delay = sys.argv[1], float(sys.argv[2]) / 1000.0
    sh("ip", "netns", "add", netns)

    def cleanup(*_):
        subprocess.run(["ip", "netns", "del", netns])
        sys.exit(0)

    signal.signal(signal.SIGTERM, cleanup)
    signal.signal(signal.SIGINT, cleanup)
    try:
        near, far = tun("cfdelay0"), tun("cfdelay1")
        # The far device keeps this process's file descriptor when it moves.
        sh("ip", "link", "set", "cfdelay1", "netns", netns)
        sh("ip", "addr", "add", HERE, "peer", THERE, "dev", "cfdelay0")
        sh("ip", "link", "set", "cfdelay0", "up")
        inside = ["ip", "netns", "exec", netns]
        sh(*inside, "ip", "addr", "add", THERE, "peer", HERE, "dev", "cfdelay1")
        sh(*inside, "ip", "link", "set", "cfdelay1", "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
    except Exception:
        cleanup()
        raise
    print("ready", flush=True)
    # (due time, destination fd, packet), in order: the delay is the same for every packet.
    queue = deque()
    peer = {near: far, far: near}
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
        readable, _, _ = select.select([near, far], [], [], timeout)
        now = time.monotonic()
        for fd in readable:
            while True:
                try:
                    packet = os.read(fd, 65535)
                except BlockingIOError:
                    break
                queue.append((now + delay, peer[fd], packet))
        while queue and queue[0][0] <= time.monotonic():
            _, fd, packet = queue.popleft()
            try:
                os.write(fd, packet)
            except OSError:
                pass  # the device's queue is full: the packet is lost, as on a real link


if __name__ == "__main__":
    main()
