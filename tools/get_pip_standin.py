"""Offline stand-in for ansible-test's get-pip bootstrap script.

ansible-test downloads get-pip-<version>.py from a host the build machines cannot reach.
It runs the cached script as `python get_pip_X_Y.py <pip install options> pip==X.Y`.
This stand-in bootstraps pip with ensurepip, then installs the requested pip from the
package index the machine is configured for. Both run in child processes: ensurepip run
in-process sets PIP_CONFIG_FILE=/dev/null and would lose the machine's pip settings.
"""
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *args])
