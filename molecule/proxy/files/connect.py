# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Raw requests to a proxy, for the proxy scenario's verify (test code, runs on a lab host).

Reads a JSON list of cases on stdin, so credentials never appear on a command line:
  {"name": ..., "host": H, "port": P, "target": "node:port", "method": "CONNECT",
   "username": U, "password": T, "headers": {...}, "source": ADDRESS}   -> the HTTP status squid answers
  {"name": ..., "host": H, "port": P, "tcp": true}         -> "open", "refused" or "timeout"
Prints one JSON object {name: result}. Never prints a credential.
"""

import base64
import json
import socket
import sys


def http_status(case):
    method = case.get("method", "CONNECT")
    target = case["target"]
    uri = target if method == "CONNECT" else "http://%s/" % target
    lines = ["%s %s HTTP/1.1" % (method, uri), "Host: %s" % target]
    if case.get("username") is not None:
        basic = base64.b64encode(("%s:%s" % (case["username"], case["password"])).encode()).decode()
        lines.append("Proxy-Authorization: Basic %s" % basic)
    lines += ["%s: %s" % item for item in case.get("headers", {}).items()]
    source = (case["source"], 0) if case.get("source") else None
    with socket.create_connection((case["host"], case["port"]), timeout=10, source_address=source) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    parts = answer.split(b" ", 2)
    if len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return "no answer"


def tcp(case):
    try:
        socket.create_connection((case["host"], case["port"]), timeout=5).close()
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        return "error: %s" % exc.strerror
    return "open"


def main():
    results = {}
    for case in json.load(sys.stdin):
        try:
            results[case["name"]] = tcp(case) if case.get("tcp") else http_status(case)
        except OSError as exc:
            results[case["name"]] = "error: %s" % (exc.strerror or type(exc).__name__)
    json.dump(results, sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
