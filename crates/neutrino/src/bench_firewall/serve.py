"""serve.py PORT: accepts TCP connections on PORT and closes them."""
import socket
import sys

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(128)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.close()
