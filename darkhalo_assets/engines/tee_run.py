"""Run a command, copying its merged stdout/stderr to our stdout and to a log file.

    python -m darkhalo_assets.engines.tee_run LOGFILE -- spark-submit ...

The spark engine launches spark-submit through this, so the driver's output reaches the
Dagster compute logs and also stays in a file a failure message can point to. SIGINT and
SIGTERM are passed on to the child (Dagster's PipesSubprocessClient sends SIGINT on cancel);
the exit code is the child's. Both die with their parent (``engines.parent_death``).
"""
from __future__ import annotations

import signal
import subprocess
import sys

from darkhalo_assets.engines.parent_death import die_with_parent, preexec_die_with_parent


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m darkhalo_assets.engines.tee_run LOGFILE -- COMMAND...", file=sys.stderr)
        return 2
    log_path, cmd = argv[0], argv[2:]
    # Our handlers go in before anything else: a process that launched us with SIGTERM or SIGINT
    # ignored (or blocked) would otherwise have both tee_run and spark-submit (which inherits an
    # ignored signal across exec, and the mask) deaf to the stop below. A signal before the
    # child exists ends us; the kernel then kills the child (its parent-death signal).
    child: list[subprocess.Popen] = []

    def forward(signum, _frame):
        if not child:
            raise SystemExit(128 + signum)
        child[0].send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    # If the Dagster process is killed, SIGTERM reaches us and is passed on (a graceful Spark
    # stop); if we are killed, the kernel kills spark-submit (and with it the local driver,
    # whose executors are its threads and whose Python workers exit when it does).
    die_with_parent(sig=signal.SIGTERM)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                preexec_fn=preexec_die_with_parent(signal.SIGKILL))
        child.append(proc)
        out = sys.stdout.buffer
        for line in iter(proc.stdout.readline, b""):
            log.write(line)
            out.write(line)
            out.flush()
        return proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
