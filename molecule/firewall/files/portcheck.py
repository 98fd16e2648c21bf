"""TCP connect probe and port scanner for the firewall scenario (stdlib only, epoll).

    portcheck.py HOST PORTS [--timeout S] [--concurrency N] [--source ADDR] [--source-port N]
    portcheck.py --batch [--timeout S] < probes.json

PORTS is a comma-separated list of ports and ranges ("1-65535", "3128,5900,61000-61002").
Every port is tried with a full TCP connect (non-blocking, up to N at once) and classified:
  open      the handshake completed (something listens and the firewall let us in)
  closed    the host answered with a reset (nobody listens, or a REJECT with tcp-reset)
  filtered  no answer within the timeout (a DROP)
  error     anything else (e.g. an ICMP unreachable), with the errno name
Prints one JSON object: {"host", "open": [ports], "closed": [[lo, hi]...],
"filtered": [[lo, hi]...], "error": {port: reason}, "tried": n, "seconds": s}.
With --batch, reads a JSON list of {"host", "ports", "source", "source_port"} on stdin,
runs them all at once and prints a JSON list of results, in the same order, each also
with "state": {port: open|closed|filtered|error}.
"""

import argparse
import collections
import errno
import json
import select
import socket
import struct
import sys
import time

LINGER_RESET = struct.pack("ii", 1, 0)  # close with a reset: no TIME_WAIT left behind


def parse_ports(spec):
    ports = []
    for part in str(spec).split(","):
        low, _dash, high = part.strip().partition("-")
        low = int(low)
        high = int(high) if high else low
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"bad port range {part!r}")
        ports.extend(range(low, high + 1))
    return sorted(set(ports))


def ranges(ports):
    out = []
    for port in sorted(ports):
        if out and out[-1][1] == port - 1:
            out[-1][1] = port
        else:
            out.append([port, port])
    return out


def classify(err):
    if err == 0:
        return "open"
    if err == errno.ECONNREFUSED:
        return "closed"
    if err == errno.ETIMEDOUT:
        return "filtered"
    return "error:" + errno.errorcode.get(err, str(err))


def run(specs, timeout, concurrency):
    """Tries every (spec, port) and returns one {port: state} per spec."""
    todo = collections.deque()
    for index, spec in enumerate(specs):
        info = socket.getaddrinfo(spec["host"], None, type=socket.SOCK_STREAM)[0]
        family, address = info[0], info[4][0]
        source = None
        if spec.get("source") or spec.get("source_port"):
            source = (spec.get("source") or ("::" if family == socket.AF_INET6 else "0.0.0.0"),
                      int(spec.get("source_port") or 0))
        for port in parse_ports(spec["ports"]):
            todo.append((index, family, address, port, source))
    states = [{} for _spec in specs]
    poller = select.epoll()
    pending = {}  # fd -> (socket, index, port, deadline), in the order they started
    while todo or pending:
        while todo and len(pending) < concurrency:
            index, family, address, port, source = todo.popleft()
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            if source is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(source)
            err = sock.connect_ex((address, port))
            if err == errno.EINPROGRESS:
                poller.register(sock.fileno(), select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP)
                pending[sock.fileno()] = (sock, index, port, time.monotonic() + timeout)
            else:
                states[index][port] = classify(err)
                sock.close()
        first = next(iter(pending.values()), None)
        wait = max(0.0, first[3] - time.monotonic()) if first else 0
        for fd, _events in poller.poll(min(wait, 0.2), max(1, len(pending))):
            sock, index, port, _deadline = pending.pop(fd)
            poller.unregister(fd)
            states[index][port] = classify(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
            sock.close()
        now = time.monotonic()
        while pending:
            fd, (sock, index, port, deadline) = next(iter(pending.items()))
            if deadline > now:
                break
            del pending[fd]
            poller.unregister(fd)
            # Answered after all (a busy loop saw it late): a connect still under way is
            # not writable.
            probe = select.poll()
            probe.register(sock, select.POLLOUT)
            ready = probe.poll(0)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if ready else errno.ETIMEDOUT
            states[index][port] = classify(err)
            sock.close()
    poller.close()
    return states


def report(spec, state, seconds):
    by = collections.defaultdict(list)
    for port, name in state.items():
        by[name.split(":")[0]].append(port)
    return {"host": spec["host"], "source": spec.get("source"), "source_port": spec.get("source_port"),
            "open": sorted(by["open"]), "closed": ranges(by["closed"]), "filtered": ranges(by["filtered"]),
            "error": {str(p): n.split(":", 1)[1] for p, n in sorted(state.items()) if n.startswith("error:")},
            "tried": len(state), "state": {str(p): n.split(":")[0] for p, n in sorted(state.items())},
            "seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host", nargs="?")
    parser.add_argument("ports", nargs="?")
    parser.add_argument("--batch", action="store_true", help="read a JSON list of probes on stdin")
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=2000)
    parser.add_argument("--source", help="local address to connect from")
    parser.add_argument("--source-port", type=int, default=0, help="local port to connect from")
    args = parser.parse_args()
    if args.batch:
        specs = json.load(sys.stdin)
    elif args.host and args.ports:
        specs = [{"host": args.host, "ports": args.ports, "source": args.source, "source_port": args.source_port}]
    else:
        parser.error("give HOST and PORTS, or --batch")
    start = time.monotonic()
    states = run(specs, args.timeout, args.concurrency)
    seconds = round(time.monotonic() - start, 2)
    out = [report(spec, state, seconds) for spec, state in zip(specs, states)]
    if not args.batch:
        out = out[0]
        del out["state"]
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
