"""Azurite's blob service (the Azure Storage emulator, from npm) on 127.0.0.1 for the tests.

Usage: azurite.py PATH_TO_azurite-blob. Starts it in memory on a free port, creates the
container `weir`, prints `port N`, and stops it when its standard input closes.
"""
import re
import subprocess
import sys

from azure.storage.blob import BlobServiceClient

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
child = subprocess.Popen(
    [sys.argv[1], "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence", "--loose",
     "--skipApiVersionCheck", "--disableTelemetry"],
    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
)
port = None
for line in child.stdout:
    m = re.search(r"listens on http://127\.0\.0\.1:(\d+)", line)
    if m:
        port = int(m.group(1))
        break
if port is None:
    sys.exit("azurite did not start")
url = f"http://127.0.0.1:{port}/devstoreaccount1"
BlobServiceClient.from_connection_string(
    f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};BlobEndpoint={url};"
).create_container("weir")
print(f"port {port}", flush=True)
try:
    sys.stdin.read()
finally:
    child.terminate()
    child.wait()
