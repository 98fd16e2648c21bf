# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""lab/python/vmc_lab_forkserver.py: a piped script runs in a forked warm Python as python3 runs it.

The server runs here as it runs on a lab host (started by its own file, serving a socket in a
temporary folder); each test's server is ended by its PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

LAB_PYTHON = Path(__file__).resolve().parents[2] / "lab" / "python"
SERVER = LAB_PYTHON / "vmc_lab_forkserver.py"
sys.path.insert(0, str(LAB_PYTHON))
import vmc_lab_forkserver  # noqa: E402  pylint: disable=wrong-import-position


def start(path, *args):
    """As lab_podman starts it: the server's source piped into python3, the socket (and more) as arguments."""
    out = subprocess.run([sys.executable, "-", path, *args], input=SERVER.read_bytes(), capture_output=True,
                         timeout=30, check=True).stdout.decode().strip()
    return out


def gone(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while not vmc_lab_forkserver.ended(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(name="server")
def fixture_server(tmp_path):
    path = str(tmp_path / "fork.sock")
    word, pid = start(path).split()
    assert word == "started"
    yield path
    os.kill(int(pid), signal.SIGTERM)
    assert gone(int(pid))


def run(path, script, **kwargs):
    return vmc_lab_forkserver.request(path, script if isinstance(script, bytes) else script.encode(), **kwargs)


def test_a_script_runs_as_python3_runs_one_from_stdin(server):
    rc, out, err = run(server, "import sys\nprint(repr(sys.argv), __name__, hasattr(sys.modules['__main__'], '__file__'))\n"
                               "sys.stderr.write('to stderr')\nsys.exit(3)\n")
    assert (rc, out, err) == (3, b"[''] __main__ False\n", b"to stderr")
    fresh = subprocess.run([sys.executable], input=b"import sys\nprint(repr(sys.argv), __name__)\nsys.exit(3)\n",
                           capture_output=True, check=False)
    assert (fresh.returncode, fresh.stdout) == (3, b"[''] __main__\n")


@pytest.mark.parametrize("code, status, stderr", [
    ("None", 0, b""), ("0", 0, b""), ("256 + 7", 7, b""), ("'bad input'", 1, b"bad input\n"),
])
def test_the_exit_status_is_what_the_interpreter_makes_of_sys_exit(server, code, status, stderr):
    assert run(server, "import sys\nsys.exit(%s)\n" % code) == (status, b"", stderr)


def test_an_uncaught_exception_is_printed_as_the_interpreter_prints_it_and_the_status_is_1(server):
    rc, out, err = run(server, "x = 1\nraise ValueError('the reason')\n")
    assert (rc, out) == (1, b"")
    assert err.startswith(b"Traceback (most recent call last):\n  File \"<stdin>\", line 2, in <module>\n")
    assert err.endswith(b"ValueError: the reason\n")
    assert b"vmc_lab_forkserver" not in err, "the server's own frame shows in the traceback"
    rc, _out, err = run(server, "def (:\n")
    assert rc == 1 and b"SyntaxError" in err and b"<stdin>" in err


def test_a_run_killed_by_a_signal_reports_it_as_subprocess_does(server):
    assert run(server, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")[0] == -signal.SIGKILL


def test_nothing_of_one_run_is_left_for_the_next(server):
    first = "import sys, os\nprint(globals().get('left'), 'left' in sys.modules)\nleft = 1\nsys.modules['left'] = sys\n" \
            "os.environ['LEFT'] = '1'\nos.chdir('/tmp')\n"
    second = "import sys, os\nprint(globals().get('left'), 'left' in sys.modules, os.environ.get('LEFT'), os.getcwd())\n"
    assert run(server, first)[1] == b"None False\n"
    assert run(server, second)[1] == ("None False None %s\n" % os.getcwd()).encode()


def test_large_input_and_output_pass_without_a_deadlock(server):
    # Far more than a pipe holds (64 KiB) both ways, and stderr while stdout is full.
    script = b"data = '" + b"x" * 3_000_000 + b"'\nimport sys\nsys.stdout.write(data)\nsys.stderr.write(data[:500000])\n"
    rc, out, err = run(server, script, timeout=60)
    assert rc == 0 and len(out) == 3_000_000 and len(err) == 500_000


def test_a_run_waits_for_its_own_children_and_threads_and_runs_its_atexit_handlers(server):
    script = ("import atexit, subprocess, threading, time\n"
              "print(subprocess.run(['sh', '-c', 'exit 4']).returncode)\n"
              "atexit.register(print, 'atexit ran')\n"
              "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done', flush=True))).start()\n")
    assert run(server, script) == (0, b"4\nthread done\natexit ran\n", b"")


def test_runs_are_served_side_by_side(server, tmp_path):
    # The first waits for a file only the second makes: served one after the other, it would time out.
    flag = tmp_path / "flag"
    waiter = "import os, sys, time\nfor _ in range(500):\n    if os.path.exists(%r):\n        sys.exit(0)\n" \
             "    time.sleep(0.01)\nsys.exit(9)\n" % str(flag)
    results = []
    thread = threading.Thread(target=lambda: results.append(run(server, waiter)))
    thread.start()
    assert run(server, "open(%r, 'w').close()\n" % str(flag))[0] == 0
    thread.join(30)
    assert results == [(0, b"", b"")]


def test_a_second_start_finds_the_running_server_and_a_dead_ones_socket_is_replaced(tmp_path):
    path = str(tmp_path / "fork.sock")
    word, pid = start(path).split()
    try:
        assert start(path) == "running"
        assert run(path, "print('ok')\n")[1] == b"ok\n"
    finally:
        os.kill(int(pid), signal.SIGKILL)
    assert gone(int(pid))
    assert os.path.exists(path), "the killed server's socket file is there"
    with pytest.raises(vmc_lab_forkserver.NoServer):
        run(path, "open(%r, 'w').close()\n" % str(tmp_path / "ran"))
    assert not (tmp_path / "ran").exists(), "a request without a server ran something"
    word, pid = start(path).split()
    try:
        assert word == "started"
        assert run(path, "print('again')\n")[1] == b"again\n"
    finally:
        os.kill(int(pid), signal.SIGTERM)
    assert gone(int(pid))


def test_the_socket_is_for_its_owner_only(server):
    assert oct(os.stat(server).st_mode & 0o777) == "0o600"


def test_a_run_takes_the_environment_folder_and_umask_it_is_given(server, tmp_path):
    script = "import os\nprint(sorted(os.environ.items()), os.getcwd(), oct(os.umask(0)))\n"
    settings = {"env": {"ONLY": "this", "PATH": "/usr/bin:/bin"}, "cwd": str(tmp_path), "umask": 0o027}
    rc, out, _err = run(server, script, settings=settings)
    assert rc == 0 and out.decode() == "%s %s 0o27\n" % ([("ONLY", "this"), ("PATH", "/usr/bin:/bin")], tmp_path)
    # Its child processes see the same.
    rc, out, _err = run(server, "import subprocess\nsubprocess.run(['sh', '-c', 'echo $ONLY; pwd'])\n", settings=settings)
    assert out.decode() == "this\n%s\n" % tmp_path
    # Without settings, the server's own.
    assert run(server, "import os\nprint('ONLY' in os.environ)\n")[1] == b"False\n"


def test_an_idle_server_ends_and_leaves_its_socket_to_the_next(tmp_path):
    path = str(tmp_path / "fork.sock")
    word, pid = start(path, "0.5", "json,csv").split()
    assert word == "started"
    assert run(path, "import sys\nprint('csv' in sys.modules)\n")[1] == b"True\n", "an extra module was not imported ahead"
    assert gone(int(pid)), "the server did not end when idle"
    assert not os.path.exists(path), "the idle server left its socket"
    with pytest.raises(vmc_lab_forkserver.NoServer):
        run(path, "print('nobody')\n")
    word, pid = start(path, "0.5").split()
    assert word == "started" and run(path, "print('next')\n")[1] == b"next\n"
    assert gone(int(pid))


def test_a_request_the_server_never_took_raises_no_server(tmp_path):
    # A listener that closes each connection unanswered: the client must not take that as a run.
    import socket  # pylint: disable=import-outside-toplevel
    path = str(tmp_path / "fork.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def close_unanswered():
        conn, _addr = listener.accept()
        conn.recv(64)
        conn.close()
    thread = threading.Thread(target=close_unanswered)
    thread.start()
    try:
        with pytest.raises(vmc_lab_forkserver.NoServer):
            run(path, "print('x')\n")
    finally:
        thread.join(10)
        listener.close()


def test_stop_all_ends_the_servers_in_a_folder_and_they_leave_nothing(tmp_path):
    pids = [int(start(str(tmp_path / name)).split()[1]) for name in ("a.sock", "b.sock")]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".pid") == ["a.sock.pid", "b.sock.pid"]
    # A PID file whose process is not a server of that socket is left alone.
    (tmp_path / "c.sock.pid").write_text("%d\n" % os.getpid())
    assert sorted(vmc_lab_forkserver.stop_all(str(tmp_path))) == sorted(pids)
    assert all(gone(pid) for pid in pids)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["c.sock.pid"]
    # The next request finds no server, and a new one starts where the old one was.
    with pytest.raises(vmc_lab_forkserver.NoServer):
        run(str(tmp_path / "a.sock"), "print(1)\n")
    word, pid = start(str(tmp_path / "a.sock")).split()
    assert word == "started" and vmc_lab_forkserver.stop_all(str(tmp_path)) == [int(pid)]
