#!/usr/bin/env python3
"""Runs one command and writes what it cost as JSON.

    measure.py --out FILE.json [--timeout SECONDS] -- COMMAND ARGS...

A command still running after --timeout is stopped (SIGTERM, then SIGKILL 10 s later, to
its whole process group) and reported with rc 124. Measured:
- wall: seconds from start to exit;
- cpu_user, cpu_sys: CPU seconds of the command and every descendant it waited for
  (wait4's rusage, the same numbers `/usr/bin/time` prints);
- maxrss_kb: peak resident set of the largest process of that tree (not a sum);
- db_cpu, kafka_cpu: CPU seconds the PostgreSQL server and the Kafka broker spent in the
  same interval, read from /proc (every `postgres` process, plus what the postmaster
  collected from backends that ended; the broker's java process). These are the
  services' costs, reported apart from the tool's own.

The command's stdout and stderr go to FILE.stdout and FILE.stderr. Exit code: the
command's. Standard library only: runs on the machine's python3.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

CLK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm may hold spaces: the fields after it start past the last ')'.
    rest = data[data.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
    return [int(x) for x in rest[11:15]]


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def service_ticks():
    """CPU ticks of the PostgreSQL and Kafka server processes right now."""
    pg = kafka = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        comm = _comm(entry)
        if comm == "postgres":
            st = _stat(entry)
            if st:
                # Backends that ended were collected by the postmaster (cutime/cstime).
                pg += sum(st)
        elif comm == "java" and "kafka" in _cmdline(entry).lower():
            st = _stat(entry)
            if st:
                kafka += st[0] + st[1]
    return pg, kafka


_STOPPED = []


def _stop_group(pid):
    _STOPPED.append(pid)
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        time.sleep(wait)


def main():
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit("usage: measure.py --out FILE.json [--timeout SECONDS] -- COMMAND ARGS...")
    split = argv.index("--")
    opts, cmd = argv[:split], argv[split + 1 :]
    out = None
    timeout = None
    it = iter(opts)
    for a in it:
        if a == "--out":
            out = next(it)
        elif a == "--timeout":
            timeout = float(next(it))
        else:
            sys.exit(f"measure.py: unknown option {a}")
    if not out or not cmd:
        sys.exit("usage: measure.py --out FILE.json [--timeout SECONDS] -- COMMAND ARGS...")

    pg0, kafka0 = service_ticks()
    t0 = time.monotonic()
    with open(out + ".stdout", "wb") as so, open(out + ".stderr", "wb") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, start_new_session=True)
        if timeout is not None:
            stop = threading.Timer(timeout, _stop_group, (proc.pid,))
            stop.daemon = True
            stop.start()
        _, status, ru = os.wait4(proc.pid, 0)
        if timeout is not None:
            stop.cancel()
    wall = time.monotonic() - t0
    pg1, kafka1 = service_ticks()
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    if _STOPPED:
        rc = 124
    result = {
        "cmd": os.path.basename(cmd[0]),
        "rc": rc,
        "wall": round(wall, 3),
        "cpu_user": round(ru.ru_utime, 3),
        "cpu_sys": round(ru.ru_stime, 3),
        "maxrss_kb": ru.ru_maxrss,
        "db_cpu": round(max(pg1 - pg0, 0) / CLK, 2),
        "kafka_cpu": round(max(kafka1 - kafka0, 0) / CLK, 2),
    }
    with open(out, "w") as f:
        json.dump(result, f)
    sys.exit(rc)


if __name__ == "__main__":
    main()
