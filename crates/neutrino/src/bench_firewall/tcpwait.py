"""tcpwait.py open|closed HOST PORT TIMEOUT: tries a TCP connection to
HOST:PORT every 5 ms (each attempt given 5 ms) until one connects (open)
or one fails (closed). Prints the milliseconds it took, or "timeout".
Prints "ready" first, once it is about to try, so a caller can start its
clock after the interpreter's start-up."""
import socket
import sys
import time


def attempt(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(0.005)
    try:
        s.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def main():
    want_open = sys.argv[1] == "open"
    host, port, timeout = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    print("ready", flush=True)
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if attempt(host, port) == want_open:
            print("%.3f" % ((time.monotonic() - start) * 1000), flush=True)
            return
        time.sleep(0.005)
    print("timeout", flush=True)


main()
