#!/usr/bin/env python3
"""Forwards a loopback port on the host to the API server inside the cluster's namespace.

    apiproxy.py NETNS_PATH LISTEN_HOST:PORT TARGET_HOST:PORT

The listening socket is created first, in the host's namespace; then the process joins the
cluster's namespace, so every connection it makes to the target starts there. The result is
plain TCP: TLS and client certificates pass through untouched, and no traffic goes anywhere but
loopback and the namespace.
"""
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def serve(client, target):
    try:
        upstream = socket.create_connection(target, timeout=10)
        upstream.settimeout(None)
    except OSError as e:
        print(f"apiproxy: connect {target}: {e}", file=sys.stderr, flush=True)
        client.close()
        return
    t = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    t.start()
    pump(client, upstream)
    t.join()
    client.close()
    upstream.close()


def main():
    netns, listen, target = sys.argv[1:4]
    lhost, lport = listen.rsplit(":", 1)
    thost, tport = target.rsplit(":", 1)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((lhost, int(lport)))
    srv.listen(128)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns, os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        sys.exit(f"apiproxy: setns {netns}: {os.strerror(ctypes.get_errno())}")
    os.close(fd)
    print(f"apiproxy: {listen} -> {target} in {netns}", file=sys.stderr, flush=True)
    while True:
        client, _ = srv.accept()
        threading.Thread(target=serve, args=(client, (thost, int(tport))), daemon=True).start()


if __name__ == "__main__":
    main()
