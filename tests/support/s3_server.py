"""An S3-compatible server (moto) on 127.0.0.1 for the integration tests.

Prints `port N` once it listens, and stops when its standard input closes (the test
process that started it exited), so that no server outlives the tests. With a file name as
its argument, it appends every request line it serves to that file.
"""
import logging
import sys

from moto.server import ThreadedMotoServer

log = logging.getLogger("werkzeug")
if len(sys.argv) > 1:
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = logging.FileHandler(sys.argv[1])
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
else:
    log.setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(f"port {server.get_host_and_port()[1]}", flush=True)
sys.stdin.read()
server.stop()
