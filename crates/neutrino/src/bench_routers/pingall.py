"""pingall.py TIMEOUT ADDRESS...: ICMP echo to every address not yet
answered, every 10 ms, until each answered once. Prints the milliseconds
until the last answer, or "timeout N" with N still unanswered. Root (raw
socket); run inside the namespace that should reach the addresses.

pingall.py TIMEOUT -: the same for each line of stdin in turn (a list of
addresses), printing one result line per input line, so that a caller
timing many rounds does not pay for starting the pinger in each."""
import os
import select
import socket
import struct
import sys
import time


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo(ident, seq):
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, checksum(header), ident, seq)


def main():
    timeout = float(sys.argv[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    if sys.argv[2:] == ["-"]:
        print("ready", flush=True)
        for line in sys.stdin:
            round_trip(sock, timeout, set(line.split()))
    else:
        round_trip(sock, timeout, set(sys.argv[2:]))


def round_trip(sock, timeout, pending):
    ident = os.getpid() & 0xFFFF
    start = time.monotonic()
    seq = 0
    last = start
    while pending:
        now = time.monotonic()
        if now - start > timeout:
            print("timeout %d" % len(pending), flush=True)
            return
        seq = (seq + 1) & 0xFFFF
        for address in pending:
            try:
                sock.sendto(echo(ident, seq), (address, 0))
            except OSError:
                pass
        deadline = time.monotonic() + 0.01
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not select.select([sock], [], [], left)[0]:
                continue
            packet, (source, _) = sock.recvfrom(2048)
            header = (packet[0] & 0x0F) * 4
            kind, _, _, rid, _ = struct.unpack("!BBHHH", packet[header:header + 8])
            if kind == 0 and rid == ident and source in pending:
                pending.discard(source)
                last = time.monotonic()
    print("%.1f" % ((last - start) * 1000), flush=True)


main()
