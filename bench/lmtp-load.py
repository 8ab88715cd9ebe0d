#!/usr/bin/env python3
"""LMTP load for bench/proxy.sh: iMIP mail into the bridge's LMTP listener.

    lmtp-load.py HOST PORT SECONDS CONNECTIONS MAILFILE SENDER RCPT...

MAILFILE is the message (CRLF line ends, no line starting with "."); each
"@ID@" in it is replaced by an id unique to the mail, so every mail has
its own Message-ID and the bridge's idempotency record never answers a
repeat without delivering it. The id starts with this run's own prefix:
the ids of one run never meet those of an earlier run against the same
bridge (numbering from 1 in each run, rounds 2 and 3 of bench/proxy.sh
repeated round 1's Message-IDs, and the bridge answered those from its
record, without delivering: faster, and not what is measured). Each
connection sends one transaction after the other (MAIL, RCPT..., DATA
pipelined, as the listener offers PIPELINING) for SECONDS, then QUIT.

Prints, as bench/imip-post.lua does for wrk:
    BENCH summary requests=MAILS duration_us=US client_cpu=FRACTION
    BENCH reply CODE COUNT            (one per recipient, as LMTP answers)
client_cpu is this process's CPU time over the wall time: near 1.0 the
load generator, not the bridge, is the limit.
"""
import asyncio
import collections
import itertools
import os
import sys
import time


async def reply(reader):
    """One SMTP/LMTP reply (all its lines); its code."""
    while True:
        line = await reader.readline()
        if len(line) < 4:
            raise ConnectionError(f"connection closed or bad reply line {line!r}")
        if line[3:4] != b"-":
            return int(line[:3])


async def session(host, port, end, template, sender, rcpts, run, ids, replies, mails):
    reader, writer = await asyncio.open_connection(host, port)
    if await reply(reader) != 220:
        raise ConnectionError("no 220 greeting")
    writer.write(b"LHLO bench.test\r\n")
    if await reply(reader) != 250:
        raise ConnectionError("LHLO refused")
    envelope = b"MAIL FROM:<%s>\r\n%sDATA\r\n" % (
        sender.encode(),
        b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts),
    )
    while time.monotonic() < end:
        message = template.replace(b"@ID@", b"%s.%d" % (run, next(ids)))
        writer.write(envelope)
        mail_from = await reply(reader)
        rcpt_codes = [await reply(reader) for _ in rcpts]
        data = await reply(reader)
        mails[0] += 1
        # A refused recipient is counted under its code; LMTP answers the
        # message once per accepted recipient.
        accepted = 0
        for code in rcpt_codes:
            if mail_from == 250 and code == 250:
                accepted += 1
            else:
                replies[code if mail_from == 250 else mail_from] += 1
        if data != 354:
            replies[data] += accepted
            writer.write(b"RSET\r\n")
            await reply(reader)
            continue
        writer.write(message + b".\r\n")
        for _ in range(accepted):
            replies[await reply(reader)] += 1
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def main():
    host, port, seconds, connections, mailfile, sender, *rcpts = sys.argv[1:]
    template = open(mailfile, "rb").read()
    if not template.endswith(b"\r\n"):
        template += b"\r\n"
    replies = collections.Counter()
    mails = [0]
    run = b"%d.%d" % (os.getpid(), time.time_ns())
    ids = itertools.count(1)
    start, cpu = time.monotonic(), time.process_time()
    end = start + float(seconds)
    await asyncio.gather(
        *(
            session(host, int(port), end, template, sender, rcpts, run, ids, replies, mails)
            for _ in range(int(connections))
        )
    )
    wall = time.monotonic() - start
    print(
        f"BENCH summary requests={mails[0]} duration_us={int(wall * 1e6)} "
        f"client_cpu={(time.process_time() - cpu) / wall:.2f}"
    )
    for code, count in sorted(replies.items()):
        print(f"BENCH reply {code} {count}")


asyncio.run(main())
