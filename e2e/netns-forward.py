#!/usr/bin/env python3
"""Forwards TCP connections from a listening address of the current network
namespace to a target inside another network namespace.

The listening socket is bound first, then the process joins the target
namespace, so every outgoing connection is made from inside it: the local
cluster's API server stays inside the namespace the cluster created while
kubectl on the host reaches it on a loopback port.
"""

import argparse
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def setns(path):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


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
        print(f"netns-forward: connect {target}: {e}", file=sys.stderr)
        client.close()
        return
    t = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    t.start()
    pump(client, upstream)
    t.join()
    client.close()
    upstream.close()


def _addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=_addr, required=True, help="HOST:PORT in the current namespace")
    p.add_argument("--netns", required=True, help="network namespace file of the target")
    p.add_argument("--target", type=_addr, required=True, help="HOST:PORT inside that namespace")
    a = p.parse_args()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(a.listen)
    lsock.listen(128)
    # Threads started from here on inherit the target namespace.
    setns(a.netns)
    print(f"netns-forward: {a.listen[0]}:{a.listen[1]} -> {a.netns} {a.target[0]}:{a.target[1]}", file=sys.stderr)
    while True:
        client, _ = lsock.accept()
        threading.Thread(target=serve, args=(client, a.target), daemon=True).start()


if __name__ == "__main__":
    main()
