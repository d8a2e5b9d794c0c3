"""Drive a running ferry-sim with the unmodified third-party client
`office365-rest-python-client` (PyPI, 3.3.x).

Only two things are adapted, as for any non-production endpoint:
  * the token: fetched from the emulator's own Entra ID token endpoint and handed to
    the library through its documented `with_access_token` / `token_callback` hooks
    (MSAL refuses non-https authorities, so the library's own MSAL flow cannot be
    pointed at http://127.0.0.1);
  * the Graph base URL: the library hard-codes https://graph.microsoft.com via
    `office365.graph_request.get_graph_authority`; we point that at the emulator.

Usage: python3 office365_client.py BASE_URL WORKDIR
Prints one line per check and "ALL OK" at the end; exits non-zero on any failure.
"""

import base64
import hashlib
import os
import sys

import requests

BASE = sys.argv[1].rstrip("/")
WORK = sys.argv[2]
TENANT = "common"


def token() -> dict:
    r = requests.post(
        f"{BASE}/{TENANT}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "ferry",
            "client_secret": "ferry-secret",
            "scope": "https://graph.microsoft.com/.default",
        },
        timeout=30,
    )
    r.raise_for_status()
    return r.json()


def quickxorhash(data: bytes) -> str:
    """Reference QuickXorHash (as documented by Microsoft), base64."""
    width, shift = 160, 11
    cells = [0] * 3  # 64+64+32 bits
    bits = [64, 64, 32]
    shifted = 0
    for b in data:
        idx = shifted // 64
        off = shifted % 64
        cell_bits = bits[idx]
        if off <= cell_bits - 8:
            cells[idx] ^= b << off
        else:
            cells[idx] ^= (b << off) & ((1 << cell_bits) - 1)
            nxt = (idx + 1) % 3
            cells[nxt] ^= b >> (cell_bits - off)
        shifted = (shifted + shift) % width
    raw = cells[0].to_bytes(8, "little") + cells[1].to_bytes(8, "little") + cells[2].to_bytes(4, "little")
    length = len(data).to_bytes(8, "little")
    out = bytearray(raw)
    for i in range(8):
        out[20 - 8 + i] ^= length[i]
    return base64.b64encode(bytes(out)).decode()


def check(cond, what):
    if not cond:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)
    print(f"ok   {what}", flush=True)


# ------------------------------------------------------------------ SharePoint REST
from office365.runtime.auth.token_response import TokenResponse  # noqa: E402
from office365.sharepoint.client_context import ClientContext  # noqa: E402

tok = token()
ctx = ClientContext(f"{BASE}/sites/hr").with_access_token(lambda: TokenResponse.from_json(tok))
web = ctx.web.get().execute_query()
check(web.properties.get("Title") == "HR", f"SP web title = {web.properties.get('Title')!r}")

subwebs = ctx.web.webs.get().execute_query()
check([w.properties.get("ServerRelativeUrl") for w in subwebs] == ["/sites/hr/benefits"], "SP subsites")

libs = ctx.web.lists.filter("BaseTemplate eq 101").expand(["RootFolder"]).get().execute_query()
titles = sorted(l.properties.get("Title") for l in libs)
check(titles == ["Archive", "Documents"], f"SP document libraries {titles}")
docs = [l for l in libs if l.properties.get("Title") == "Documents"][0]
check(docs.root_folder.properties.get("ServerRelativeUrl") == "/sites/hr/Shared Documents", "SP $expand=RootFolder")

folder = ctx.web.get_folder_by_server_relative_url("/sites/hr/Shared Documents/Policies")
files = folder.files.get().execute_query()
check(len(files) == 5, f"SP folder files ({len(files)})")
subfolders = folder.folders.get().execute_query()
check([f.name for f in subfolders] == ["2024"], "SP folder subfolders")

all_items = docs.items.get_all(page_size=4, page_loaded=None).execute_query()
check(len(all_items) == 10, f"SP list items paged ({len(all_items)})")

fpath = os.path.join(WORK, "readme.txt")
with open(fpath, "wb") as fh:
    ctx.web.get_file_by_server_relative_url("/sites/hr/Shared Documents/readme.txt").download(fh).execute_query()
with open(fpath, "rb") as fh:
    check(fh.read() == b"hello from HR", "SP file download ($value)")

# ------------------------------------------------------------------ Graph
import office365.graph_request as graph_request  # noqa: E402
from office365.graph_client import GraphClient  # noqa: E402

graph_request.get_graph_authority = lambda env: BASE  # base URL override (see docstring)

client = GraphClient(token_callback=lambda: tok)
host = BASE.split("://", 1)[1].split(":")[0]
site = client.sites.get_by_url(f"{BASE}/sites/hr").get().execute_query()
check(site.display_name == "HR" and site.id.startswith(host + ","), f"Graph site by URL ({site.id})")

drives = site.drives.get().execute_query()
names = sorted(d.name for d in drives)
check(names == ["Archive", "Documents"], f"Graph drives {names}")
drive = [d for d in drives if d.name == "Documents"][0]

children = drive.root.children.get().execute_query()
check(sorted(c.name for c in children) == ["Empty", "Policies", "readme.txt"], "Graph root children")

small = b"small file from office365-rest-python-client\n"
up = drive.root.upload("small.txt", small).execute_query()
check(up.name == "small.txt" and up.size == len(small), f"Graph simple upload ({up.size} bytes)")

big_path = os.path.join(WORK, "large.bin")
big = hashlib.sha256(b"seed").digest() * (7 * 1024 * 1024 // 32 + 123)
with open(big_path, "wb") as fh:
    fh.write(big)
chunks = []
big_item = drive.root.resumable_upload(big_path, chunk_size=327_680 * 5, chunk_uploaded=chunks.append).execute_query()
check(len(chunks) >= 4, f"Graph resumable upload in {len(chunks)} fragments")

item = drive.root.get_by_path("large.bin").get().execute_query()
check(item.size == len(big), f"Graph large file size {item.size}")
hashes = item.file.hashes
qxh = hashes.get("quickXorHash") if isinstance(hashes, dict) else hashes.quickXorHash
check(qxh == quickxorhash(big), "Graph quickXorHash matches an independent implementation")

content = drive.root.get_by_path("small.txt").get_content().execute_query()
check(content.value == small, "Graph download small file")
content = drive.root.get_by_path("large.bin").get_content().execute_query()
check(content.value == big, "Graph download large file")

print("ALL OK", flush=True)
