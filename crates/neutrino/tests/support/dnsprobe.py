#!/usr/bin/env python3
"""A stand-in upstream DNS server for the lab tests: answers every A query
on UDP port 53 with one address (argv[1]), TTL 60; prints "ready" once
listening. Standard library only; it stops with its parent's kill."""
import socket
import struct
import sys

answer = socket.inet_aton(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 53))
print("ready", flush=True)
while True:
    query, client = s.recvfrom(4096)
    if len(query) < 12:
        continue
    (qid, flags, qdcount) = struct.unpack("!HHH", query[:6])
    # The question: labels up to the root, then type and class.
    end = 12
    while end < len(query) and query[end] != 0:
        end += query[end] + 1
    question = query[12:end + 5]
    qtype = struct.unpack("!H", query[end + 1:end + 3])[0] if end + 3 <= len(query) else 0
    records = b""
    count = 0
    if qtype == 1:
        records = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + answer
        count = 1
    header = struct.pack("!HHHHHH", qid, 0x8180 | (flags & 0x0100), 1, count, 0, 0)
    s.sendto(header + question + records, client)
