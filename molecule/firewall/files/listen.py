"""Listens on every given TCP port, on all addresses (IPv4 and IPv6), on purpose: the
firewall scenario proves that the console ports are unreachable even then. Each
connection gets one line, "vmc-listener PORT", and is closed.

    listen.py PORT...
"""

import selectors
import socket
import sys


def main():
    selector = selectors.DefaultSelector()
    for port in map(int, sys.argv[1:]):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # :: takes IPv4 too
        sock.bind(("::", port))
        sock.listen(128)
        selector.register(sock, selectors.EVENT_READ, port)
    print("listening on", " ".join(sys.argv[1:]), flush=True)
    while True:
        for key, _events in selector.select():
            try:
                conn, _peer = key.fileobj.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.sendall(f"vmc-listener {key.data}\n".encode())
                except OSError:
                    pass


if __name__ == "__main__":
    main()
