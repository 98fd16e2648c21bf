# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fork server for the lab's hosts: Ansible's piped modules run in a forked, warm Python.

Every task pipes its module (an AnsiballZ script) into ``/usr/bin/python3`` on the host.
About half of what that costs the host is the interpreter starting and importing the same
standard library modules again (measured in a lab container: 0.19 s of CPU per ``command``
task fresh, 0.09 s forked from an interpreter that has them imported already;
benchmarks/lab_connection.py). The lab's connection (lab/plugins/connection/lab_podman.py)
starts this server once per host, inside the container's namespaces and cgroups, and
hands it each module run that is exactly ``/usr/bin/python3`` reading its script from
stdin: the request is three file descriptors (the run's stdin, stdout and stderr pipes)
passed over a Unix socket. The server forks a process for the request, which forks the
run: that process takes the three descriptors as 0, 1 and 2, reads the script from
stdin and runs it as ``python3`` would (``__main__`` a fresh module, ``sys.argv ==
['']``, exit status from ``SystemExit``, an uncaught exception printed and status 1,
``atexit`` handlers run). The request's process sends the run's exit status back (a
negative number for a signal, as :mod:`subprocess` reports it).

Only the standard library is imported ahead (PRELOAD): Ansible's own module code comes
from each task's zip, as without the server. Everything else (other commands, other
interpreters, ``environment:`` settings, another user) takes the connection's usual path.

Lab only: not part of the collection (galaxy.yml leaves lab/ out). The server holds no
state between runs; it lives and dies with the host's container.
"""

from __future__ import annotations

import array
import fcntl
import os
import selectors
import signal
import socket
import sys

SOCKET = "/run/vmc-lab-forkserver.sock"
# The standard library modules Ansible's module code imports (python3 -X importtime of an
# ansible-core 2.19 module run), imported once by the server instead of once per task.
PRELOAD = (
    "abc argparse ast atexit base64 collections.abc contextlib copy dataclasses datetime enum errno fcntl "
    "fnmatch functools glob grp hashlib importlib.util inspect io ipaddress itertools json locale logging "
    "operator pathlib pkgutil platform pwd re select selectors shlex shutil signal socket stat string "
    "subprocess syslog tempfile textwrap threading tokenize traceback types typing urllib.parse uuid warnings "
    "weakref zipfile"
).split()
MAX_FDS = 3


class NoServer(Exception):
    """No fork server answers at the socket: nothing ran."""


def preload(names=PRELOAD):
    """Import what every module run imports; a name this Python lacks is skipped."""
    for name in names:
        try:
            __import__(name)
        except ImportError:
            pass


def run_script(source):
    """Run ``source`` (bytes) as ``python3`` runs a script read from stdin; returns the exit status."""
    import atexit  # pylint: disable=import-outside-toplevel
    import types  # pylint: disable=import-outside-toplevel
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    sys.argv = [""]
    status = 0
    try:
        exec(compile(source, "<stdin>", "exec"), main.__dict__)  # pylint: disable=exec-used
    except SystemExit as exc:
        status = exit_status(exc.code)
    except BaseException:  # pylint: disable=broad-exception-caught
        # As the interpreter reports it: through sys.excepthook, without this function's frame.
        kind, value, trace = sys.exc_info()
        sys.excepthook(kind, value.with_traceback(trace.tb_next), trace.tb_next)
        status = 1
    # What the interpreter does on its way out: wait for the threads the script left running,
    # then the atexit handlers.
    threading = sys.modules.get("threading")
    for last in (getattr(threading, "_shutdown", None), atexit._run_exitfuncs):  # pylint: disable=protected-access
        try:
            if last is not None:
                last()
        except BaseException:  # pylint: disable=broad-exception-caught
            pass
    return status


def exit_status(code):
    """What the interpreter makes of ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write("%s\n" % (code,))
    except (OSError, ValueError):
        pass
    return 1


def worker(fds):
    """In the forked run: the request's descriptors as 0, 1 and 2, then the script from stdin."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    # The server never read or wrote sys.stdin, sys.stdout or sys.stderr: nothing buffered
    # in them belongs to another run.
    source = sys.stdin.buffer.read()
    status = run_script(source)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return status


def handle(conn):
    """In the request's process: receive the descriptors, fork the run, send back its status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    fds = array.array("i")
    msg, ancdata, _flags, _addr = conn.recvmsg(64, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    if msg != b"run\n" or len(fds) != 3:
        conn.sendall(b"error bad request\n")
        return
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            conn.close()
            status = worker(list(fds))
        finally:
            os._exit(status)  # pylint: disable=protected-access
    for fd in fds:
        os.close(fd)
    _pid, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    conn.sendall(b"exit %d\n" % code)


def serve(listener):
    """Accept forever; each request in a process of its own (reaped by the kernel)."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    while True:
        try:
            conn, _addr = listener.accept()
        except InterruptedError:
            continue
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                listener.close()
                handle(conn)
            except BaseException:  # pylint: disable=broad-exception-caught
                code = 1
            finally:
                os._exit(code)  # pylint: disable=protected-access
        conn.close()


def start(path=SOCKET):
    """Serve on ``path`` in the background unless a server answers there; returns when it listens.

    "running" when one answered, else "started PID" (the new server's process). A socket file
    nobody answers at (a server that was killed) is replaced.
    """
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            return "running"
        except OSError:
            pass
        finally:
            probe.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket: 0600
        try:
            listener.bind(path)
        finally:
            os.umask(old)
        listener.listen(64)
        pid = os.fork()
        if pid != 0:
            return "started %d" % pid
    # The server: its own session, no terminal, nothing of its starter's output pipes.
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    preload()
    try:
        serve(listener)
    finally:
        os._exit(1)  # pylint: disable=protected-access


def request(path, in_data, timeout=None):
    """Run the script ``in_data`` on the server at ``path``: (exit status, stdout, stderr).

    Raises NoServer when no server answers there (nothing ran), EOFError when the server went
    away or refused before the run's status came back, OSError when the socket failed.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    open_fds = set()
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise NoServer("no fork server at %s: %s" % (path, exc)) from exc
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        open_fds.update((stdin_r, stdin_w, out_r, out_w, err_r, err_w))
        sock.sendmsg([b"run\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [stdin_r, out_w, err_w]))])
        for fd in (stdin_r, out_w, err_w):  # the run's ends are the server's now
            os.close(fd)
            open_fds.discard(fd)
        out, err = pump(stdin_w, out_r, err_r, in_data or b"", open_fds, timeout)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(64)
            if not chunk:
                raise EOFError("the fork server at %s went away during the run" % path)
            reply += chunk
        word, _sep, value = reply.strip().partition(b" ")
        if word != b"exit":
            raise EOFError("the fork server at %s refused the run: %s" % (path, reply.strip().decode(errors="replace")))
        return int(value), out, err
    finally:
        for fd in open_fds:
            os.close(fd)
        sock.close()


def pump(stdin_w, out_r, err_r, data, open_fds, timeout=None):
    """Write ``data`` to the run's stdin, read its stdout and stderr to their ends (no deadlock).

    Each descriptor is closed (and taken out of ``open_fds``) when its side is done.
    """
    chunks = {out_r: [], err_r: []}
    view = memoryview(data)

    def done(fd):
        sel.unregister(fd)
        os.close(fd)
        open_fds.discard(fd)

    with selectors.DefaultSelector() as sel:
        os.set_blocking(stdin_w, False)
        sel.register(stdin_w, selectors.EVENT_WRITE)
        sel.register(out_r, selectors.EVENT_READ)
        sel.register(err_r, selectors.EVENT_READ)
        if not view:
            done(stdin_w)
        while sel.get_map():
            events = sel.select(timeout)
            if not events:
                raise TimeoutError("the run gave no output in %s s" % timeout)
            for key, _mask in events:
                fd = key.fd
                if fd == stdin_w:
                    try:
                        view = view[os.write(fd, view[:65536]):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        view = view[:0]  # the run stopped reading: the rest goes nowhere
                    if not view:
                        done(fd)
                    continue
                chunk = os.read(fd, 65536)
                if chunk:
                    chunks[fd].append(chunk)
                else:
                    done(fd)
    return b"".join(chunks[out_r]), b"".join(chunks[err_r])


if __name__ == "__main__":
    print(start(sys.argv[1] if len(sys.argv) > 1 else SOCKET))
