#!/usr/bin/env python3
"""pystate: a Python 3 fixture for checkpoint/restore tests.

Protocol (see testdata/fixture.h): `pystate.py WORKDIR`, stdout/stderr are
WORKDIR/log, "READY counter=0x0 entries=10000 checksum=HEX" once set up,
SIGUSR1 -> "OK counter=N" or "FAIL why", SIGUSR2 -> "BYE counter=N", exit 0.

How a test runs it: testutil.Start runs `bin WORKDIR args...`, so the
interpreter cannot be given first; the script is started as an executable
through its "#!" line (then argv is [python, script, WORKDIR] and
sys.argv[1] is WORKDIR). The tests copy it to a temporary directory with
mode 0755 and the "#!" line replaced by the absolute path of the real
interpreter (resolving a pyenv shim or /usr/bin/env, which would otherwise
exec a shell script first):

    p := testutil.Start(t, startPython(t, "pystate.py"))  // see
    // internal/testutil/threads_fixtures_test.go

Running `python3 pystate.py WORKDIR` by hand works too.

State: a dict of 10000 deterministic pseudo-random entries (random.Random(42)),
its checksum computed at start, and a counter incremented by the main loop
every 5 ms. A check recomputes the checksum, compares a few spot entries with
a freshly regenerated table, and requires the counter to have grown.
"""

import hashlib
import os
import signal
import sys
import time

# Close inherited fds before anything else (Python itself keeps none open
# once started).
os.closerange(3, 65536)

import random  # noqa: E402  (after closerange on purpose)

ENTRIES = 10000
SEED = 42
SPOTS = (0, 1, 4999, 7777, ENTRIES - 1)


def generate():
    """Returns the deterministic (key, value) list, in insertion order."""
    rng = random.Random(SEED)
    items, seen = [], set()
    while len(items) < ENTRIES:
        k = "k%012x" % rng.getrandbits(48)
        if k in seen:
            continue
        seen.add(k)
        items.append((k, rng.randrange(1 << 40)))
    return items


def checksum(d):
    """Order-independent of hash randomisation: sha256 over sorted items."""
    h = hashlib.sha256()
    for k in sorted(d):
        h.update(b"%s=%d;" % (k.encode(), d[k]))
    return h.hexdigest()


def out(s):
    sys.stdout.write(s + "\n")
    sys.stdout.flush()


counter = 0
check_flag = False
stop_flag = False
last_counter = 0


def on_usr1(signum, frame):
    global check_flag
    check_flag = True


def on_usr2(signum, frame):
    global stop_flag
    stop_flag = True


def verify(table, want_sum):
    global last_counter
    if len(table) != ENTRIES:
        return "dict has %d entries, want %d" % (len(table), ENTRIES)
    got = checksum(table)
    if got != want_sum:
        return "dict checksum %s, want %s" % (got, want_sum)
    fresh = generate()
    keys = list(table)
    for i in SPOTS:
        k, v = fresh[i]
        if keys[i] != k:
            return "entry %d has key %s, want %s" % (i, keys[i], k)
        if table.get(k) != v:
            return "table[%s]=%r, want %d" % (k, table.get(k), v)
    if counter <= last_counter:
        return "counter %d did not increase (previous check %d)" % (counter, last_counter)
    last_counter = counter
    return None


def main():
    global counter, check_flag
    if len(sys.argv) < 2:
        out("usage: pystate.py WORKDIR")
        sys.exit(2)
    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGUSR2, on_usr2)

    table = dict(generate())
    want_sum = checksum(table)
    counter = 1
    out("READY counter=0x0 entries=%d checksum=%s" % (len(table), want_sum[:16]))

    while True:
        counter += 1
        if stop_flag:
            out("BYE counter=%d" % counter)
            sys.stdout.flush()
            os._exit(0)
        if check_flag:
            check_flag = False
            why = verify(table, want_sum)
            out("FAIL " + why if why else "OK counter=%d" % counter)
        time.sleep(0.005)


if __name__ == "__main__":
    main()
