"""Probes for the router end-to-end tests, run inside lab namespaces.

  netprobe.py serve PORT            TCP and UDP on PORT (v4 and v6): tells each
                                    peer the address it came from ("peer=A"),
                                    then echoes TCP lines.
  netprobe.py ask tcp|udp HOST PORT [SOURCE]
                                    prints what the server answered, or
                                    "none" after 3 s; from address SOURCE
                                    when given.
  netprobe.py hold HOST PORT FLAG   a TCP connection that exchanges a line,
                                    waits for the file FLAG to exist, then tries
                                    again: prints "alive" or "dead".
"""
import os
import socket
import sys
import threading
import time


def unmapped(addr):
    return addr[7:] if addr.startswith("::ffff:") else addr


def serve(port):
    def udp():
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        u.bind(("::", port))
        while True:
            _, peer = u.recvfrom(2048)
            u.sendto(("peer=%s\n" % unmapped(peer[0])).encode(), peer)

    def client(c, peer):
        with c:
            c.sendall(("peer=%s\n" % unmapped(peer[0])).encode())
            while True:
                data = c.recv(2048)
                if not data:
                    return
                c.sendall(data)

    threading.Thread(target=udp, daemon=True).start()
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(64)
    print("listening", flush=True)
    while True:
        c, peer = s.accept()
        threading.Thread(target=client, args=(c, peer), daemon=True).start()


def ask(proto, host, port, source=None):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if proto == "tcp":
            bind = (source, 0) if source else None
            s = socket.create_connection((host, port), timeout=3, source_address=bind)
        else:
            s = socket.socket(family, socket.SOCK_DGRAM)
            if source:
                s.bind((source, 0))
            s.settimeout(3)
            s.sendto(b"hi\n", (host, port))
        print(s.recv(2048).decode().strip())
    except OSError:
        print("none")


def hold(host, port, flag):
    s = socket.create_connection((host, port), timeout=3)
    s.recv(2048)
    s.sendall(b"one\n")
    assert s.recv(2048) == b"one\n"
    print("connected", flush=True)
    while not os.path.exists(flag):
        time.sleep(0.05)
    try:
        s.settimeout(3)
        s.sendall(b"two\n")
        print("alive" if s.recv(2048) == b"two\n" else "dead")
    except OSError:
        print("dead")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "serve":
        serve(int(sys.argv[2]))
    elif mode == "ask":
        ask(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
    elif mode == "hold":
        hold(sys.argv[2], int(sys.argv[3]), sys.argv[4])
