#!/usr/bin/env python3
"""Baseline for bench/imip-throughput.sh: the SMTP sink's own ingest rate.

usage: sink-baseline.py PORT SAMPLE COUNT MAX_SECONDS RECIPIENT_DOMAIN RECIPIENTS

Sends COUNT copies of SAMPLE (a message the bridge delivered, as the sink
stored it) to the sink on 127.0.0.1:PORT over one SMTP connection with
Python's smtplib, each to one of RECIPIENTS distinct addresses at
RECIPIENT_DOMAIN, and stops early after MAX_SECONDS. The sink's own
X-Peer/X-MailFrom/X-RcptTo headers are taken off and line ends made CRLF,
so what goes over the wire is the bridge's message, byte for byte in size.
Prints "sent=N seconds=S bytes=B" (S from the first MAIL FROM to the last
reply after DATA).
"""
import re
import smtplib
import sys
import time


def wire_form(raw: bytes) -> bytes:
    head, sep, body = raw.partition(b"\n\n")
    lines = head.split(b"\n")
    kept, skipping = [], False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.split(b":", 1)[0].lower() in (b"x-peer", b"x-mailfrom", b"x-rcptto")
        if not skipping:
            kept.append(line)
    message = b"\n".join(kept) + sep + body
    return re.sub(rb"(?<!\r)\n", b"\r\n", message)


def main() -> None:
    port, sample, count, max_seconds, domain, recipients = sys.argv[1:7]
    count, max_seconds, recipients = int(count), float(max_seconds), max(1, int(recipients))
    message = wire_form(open(sample, "rb").read())
    with smtplib.SMTP("127.0.0.1", int(port), local_hostname="bench.invalid") as smtp:
        smtp.ehlo()
        sent = 0
        started = time.perf_counter()
        deadline = started + max_seconds
        while sent < count and time.perf_counter() < deadline:
            to = f"user{sent % recipients + 1:03d}@{domain}"
            smtp.sendmail("calendar-bridge@bridge.test", [to], message)
            sent += 1
        seconds = time.perf_counter() - started
    print(f"sent={sent} seconds={seconds:.6f} bytes={len(message)}", flush=True)


if __name__ == "__main__":
    main()
