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
PRELOAD = tuple((
    "abc argparse ast atexit base64 collections.abc contextlib copy dataclasses datetime enum errno fcntl "
    "fnmatch functools glob grp hashlib importlib.util inspect io ipaddress itertools json locale logging "
    "operator pathlib pkgutil platform pwd re select selectors shlex shutil signal socket stat string "
    "subprocess syslog tempfile textwrap threading tokenize traceback types typing urllib.parse uuid warnings "
    "weakref zipfile"
).split())
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


def worker(fds, settings):
    """In the forked run: the request's descriptors as 0, 1 and 2, its settings, then the script from stdin."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    if settings.get("env") is not None:
        os.environ.clear()
        os.environ.update(settings["env"])
    if settings.get("cwd") is not None:
        os.chdir(settings["cwd"])
    if settings.get("umask") is not None:
        os.umask(settings["umask"])
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


def receive(conn):
    """The request: ``run N\\n`` with the three descriptors, then N bytes of JSON settings."""
    fds = array.array("i")
    msg, ancdata, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    head, sep, rest = msg.partition(b"\n")
    word, _space, size = head.partition(b" ")
    if not sep or word != b"run" or not size.isdigit() or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return None, None
    while len(rest) < int(size):
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    import json  # pylint: disable=import-outside-toplevel
    return list(fds), json.loads(rest.decode()) if int(size) else {}


def handle(conn):
    """In the request's process: take the request, say so, fork the run, send back its status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    fds, settings = receive(conn)
    if fds is None:
        conn.sendall(b"error bad request\n")
        return
    # Taken: from here on the run is this server's (the client no longer starts another).
    conn.sendall(b"ok\n")
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            conn.close()
            status = worker(fds, settings)
        finally:
            os._exit(status)  # pylint: disable=protected-access
    for fd in fds:
        os.close(fd)
    _pid, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    conn.sendall(b"exit %d\n" % code)


class Stop(Exception):
    """SIGTERM reached the server."""


def stop_on_sigterm(_signum, _frame):
    raise Stop()


def leave(listener, path):
    """The server's end: its socket and PID file go (under the starters' lock), then the listener."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Still this server's: a starter replaces the socket only when nobody answers.
        for name in (path, path + ".pid"):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
        listener.close()


def serve(listener, path, idle=None):
    """Accept until ``idle`` seconds pass without a request; each request in a process of its own.

    The request processes are reaped by the kernel. On the idle exit the socket goes first
    (under the starters' lock), so a client either reaches this server or starts a new one;
    a request still in the backlog is reset before it was taken, and its client starts a
    new server.
    """
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    listener.settimeout(idle)
    while True:
        try:
            conn, _addr = listener.accept()
        except InterruptedError:
            continue
        except (socket.timeout, Stop):
            leave(listener, path)
            return
        conn.settimeout(None)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                listener.close()
                handle(conn)
            except BaseException:  # pylint: disable=broad-exception-caught
                code = 1
            finally:
                os._exit(code)  # pylint: disable=protected-access
        conn.close()


def start(path=SOCKET, idle=None, extra=()):
    """Serve on ``path`` in the background unless a server answers there; returns when it listens.

    "running" when one answered, else "started PID" (the new server's process). A socket file
    nobody answers at (a server that was killed) is replaced. The server ends after ``idle``
    seconds without a request (None: with its host); ``extra`` names more modules to import
    ahead (modules of the interpreter's own site-packages, never one that comes in a module's zip).
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
        # The server: its own session, no terminal, nothing of its starter's output pipes; its
        # PID next to the socket (stop_all()), written before the lock is released.
        with open(path + ".pid", "w") as pidfile:
            pidfile.write("%d\n" % os.getpid())
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    code = 1
    try:
        preload(PRELOAD + tuple(extra))
        serve(listener, path, idle)
        code = 0
    except Stop:  # while it was importing
        leave(listener, path)
        code = 0
    finally:
        os._exit(code)  # pylint: disable=protected-access


def stop_all(folder, timeout=10.0):
    """End every server whose socket is in ``folder`` (SIGTERM: each removes its socket and exits).

    A server started by another checkout ends too; its clients start a new one on their next
    request. Returns the PIDs that were ended.
    """
    import glob  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel
    stopped = []
    for pidfile in sorted(glob.glob(os.path.join(folder, "*.sock.pid"))):
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip())
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                # The same process, not a PID used again: its command line names the socket.
                if pidfile[:-len(".pid")].encode() not in f.read().split(b"\0"):
                    continue
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            continue
        stopped.append(pid)
    deadline = time.monotonic() + timeout
    for pid in stopped:
        while not ended(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    return stopped


def ended(pid):
    """Process ``pid`` is gone, or a zombie (its parent exited; reaping it is not ours to do)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


def request(path, in_data, settings=None, timeout=None):
    """Run the script ``in_data`` on the server at ``path``: (exit status, stdout, stderr).

    ``settings``: the run's ``env`` (all of it), ``cwd`` and ``umask``, each only when given
    (else the server's own). Raises NoServer when no server took the run (nothing ran),
    EOFError when the server went away or refused after it took it, OSError when the socket
    failed.
    """
    import json  # pylint: disable=import-outside-toplevel
    body = json.dumps(settings).encode() if settings else b""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    open_fds = set()
    replies = None
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise NoServer("no fork server at %s: %s" % (path, exc)) from exc
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        open_fds.update((stdin_r, stdin_w, out_r, out_w, err_r, err_w))
        replies = sock.makefile("rb")
        try:
            sock.sendmsg([b"run %d\n" % len(body)],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [stdin_r, out_w, err_w]))])
            sock.sendall(body)
            taken = replies.readline()
        except OSError as exc:  # a server that ended on its idle timeout with this request in its backlog
            raise NoServer("the fork server at %s did not take the run: %s" % (path, exc)) from exc
        if taken != b"ok\n":
            if not taken:
                raise NoServer("the fork server at %s ended before it took the run" % path)
            raise EOFError("the fork server at %s refused the run: %s" % (path, taken.strip().decode(errors="replace")))
        for fd in (stdin_r, out_w, err_w):  # the run's ends are the server's now
            os.close(fd)
            open_fds.discard(fd)
        out, err = pump(stdin_w, out_r, err_r, in_data or b"", open_fds, timeout)
        word, _sep, value = replies.readline().strip().partition(b" ")
        if word != b"exit":
            raise EOFError("the fork server at %s went away during the run" % path)
        return int(value), out, err
    finally:
        for fd in open_fds:
            os.close(fd)
        if replies is not None:
            replies.close()
        sock.close()


def request_or_start(path, in_data, start_server, settings=None, log=None):
    """request(), and when no server answers, ``start_server()`` one and ask it once more.

    ``start_server`` returns (started, message). Returns (exit status, stdout, stderr), or None
    when no server could be started or reached (nothing ran: the caller runs the script its
    usual way). ``log(message)`` hears what happened.
    """
    log = log or (lambda message: None)
    try:
        return request(path, in_data, settings)
    except NoServer as exc:
        log("%s; starting it" % exc)
    started, message = start_server()
    log(message)
    if not started:
        return None
    try:
        return request(path, in_data, settings)
    except NoServer as exc:
        log(str(exc))
        return None


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
    # python3 - [SOCKET [IDLE_SECONDS [MODULE,...]]], the source on stdin (as the lab's connections start it);
    # python3 vmc_lab_forkserver.py --stop-all FOLDER (tools/test.sh and tools/demo.sh, at their end).
    if sys.argv[1:2] == ["--stop-all"]:
        print("fork servers ended: %d" % len(stop_all(sys.argv[2])))
        sys.exit(0)
    ARGS = sys.argv[1:] + [""] * 3
    print(start(ARGS[0] or SOCKET, float(ARGS[1]) if ARGS[1] else None, [m for m in ARGS[2].split(",") if m]))
