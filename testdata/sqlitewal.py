#!/usr/bin/env python3
"""sqlitewal: a sqlite3 writer in WAL mode, for checkpoint/restore tests.

Protocol (see testdata/fixture.h and pystate.py): `sqlitewal.py WORKDIR`,
"READY counter=0x0 db=PATH" once set up, SIGUSR1 -> "OK counter=N" or
"FAIL why", SIGUSR2 -> "BYE counter=N", exit 0.

WORKDIR/db.sqlite is put in WAL mode (journal_mode=WAL): the connection keeps
the -shm file mapped MAP_SHARED and holds a POSIX read lock on its byte 128
(sqlite's "DMS" lock, os_unix.c) for as long as it is open; the main loop
inserts one row per transaction every 2 ms. A check requires the row count
to equal the rows inserted, `PRAGMA integrity_check` to say ok and the
counter to have grown since the previous check.
"""

import os
import signal
import sqlite3
import sys
import time

os.closerange(3, 65536)

counter = 0
check_flag = False
stop_flag = False
last_counter = 0


def out(s):
    sys.stdout.write(s + "\n")
    sys.stdout.flush()


def on_usr1(signum, frame):
    global check_flag
    check_flag = True


def on_usr2(signum, frame):
    global stop_flag
    stop_flag = True


def verify(db):
    global last_counter
    (n,) = db.execute("SELECT count(*) FROM t").fetchone()
    if n != counter:
        return "%d rows, want %d" % (n, counter)
    (ic,) = db.execute("PRAGMA integrity_check").fetchone()
    if ic != "ok":
        return "integrity_check: %s" % ic
    (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    if mode != "wal":
        return "journal_mode %s" % mode
    if counter <= last_counter:
        return "counter %d did not increase (previous check %d)" % (counter, last_counter)
    last_counter = counter
    return None


def main():
    global counter, check_flag
    if len(sys.argv) < 2:
        out("usage: sqlitewal.py WORKDIR")
        sys.exit(2)
    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGUSR2, on_usr2)
    path = os.path.join(sys.argv[1], "db.sqlite")
    db = sqlite3.connect(path, isolation_level=None)
    (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
    if mode != "wal":
        out("SETUP FAILED: journal_mode %s" % mode)
        sys.exit(1)
    db.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    out("READY counter=0x0 db=%s" % path)
    while True:
        db.execute("BEGIN")
        db.execute("INSERT INTO t (v) VALUES (?)", ("row %d %s" % (counter, "x" * 200),))
        db.execute("COMMIT")
        counter += 1
        if stop_flag:
            db.close()
            out("BYE counter=%d" % counter)
            os._exit(0)
        if check_flag:
            check_flag = False
            why = verify(db)
            out("FAIL " + why if why else "OK counter=%d" % counter)
        time.sleep(0.002)


if __name__ == "__main__":
    main()
