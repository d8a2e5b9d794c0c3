"""Drive a running ferry-sim with Microsoft's own Python Graph SDK, `msgraph-sdk`
(PyPI 1.x, Kiota-generated, strict models).

Adapted only where any non-production endpoint needs it, through the SDK's documented
extension points:
  * base URL: `GraphRequestAdapter.base_url = f"{BASE}/v1.0"`;
  * token: a Kiota `AccessTokenProvider` returning a token from the emulator's own
    Entra ID token endpoint (azure-identity/MSAL refuse http:// authorities).

Usage: python3 msgraph_sdk_client.py BASE_URL
Prints one line per check and "ALL OK"; exits non-zero on failure.
"""

import asyncio
import io
import sys

import requests
from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator, BaseBearerTokenAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.drives.item.items.item.create_upload_session.create_upload_session_post_request_body import (
    CreateUploadSessionPostRequestBody,
)
from msgraph.generated.models.drive_item import DriveItem
from msgraph.generated.models.drive_item_uploadable_properties import DriveItemUploadableProperties
from msgraph.generated.models.folder import Folder

BASE = sys.argv[1].rstrip("/")
HOST = BASE.split("://", 1)[1].split("/")[0].split(":")[0]


class SimTokenProvider(AccessTokenProvider):
    def __init__(self):
        r = requests.post(
            f"{BASE}/common/oauth2/v2.0/token",
            data={"grant_type": "client_credentials", "client_id": "ferry", "client_secret": "ferry-secret",
                  "scope": "https://graph.microsoft.com/.default"},
            timeout=30,
        )
        r.raise_for_status()
        self.token = r.json()["access_token"]

    async def get_authorization_token(self, uri, additional_authentication_context=None):
        return self.token

    def get_allowed_hosts_validator(self):
        return AllowedHostsValidator([HOST])


def check(cond, what):
    if not cond:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)
    print(f"ok   {what}", flush=True)


async def main():
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(SimTokenProvider()))
    adapter.base_url = f"{BASE}/v1.0"
    client = GraphServiceClient(request_adapter=adapter)

    site = await client.sites.by_site_id(f"{HOST}:/sites/hr:").get()
    check(site.display_name == "HR" and site.id.count(",") == 2, f"site by path ({site.id})")
    check(site.sharepoint_ids is not None and site.sharepoint_ids.site_id is not None, "site sharepointIds parsed")

    drives = await client.sites.by_site_id(site.id).drives.get()
    check(sorted(d.name for d in drives.value) == ["Archive", "Documents"], "drives")
    drive = [d for d in drives.value if d.name == "Documents"][0]
    did = drive.id
    check(drive.drive_type == "documentLibrary", "driveType")

    # Folder + many children, paged with $top and @odata.nextLink.
    folder = await client.drives.by_drive_id(did).items.by_drive_item_id("root").children.post(
        DriveItem(name="sdk", folder=Folder(), additional_data={"@microsoft.graph.conflictBehavior": "fail"})
    )
    check(folder.folder is not None and folder.name == "sdk", "create folder")
    for i in range(7):
        await client.drives.by_drive_id(did).items.by_drive_item_id(f"{folder.id}:/f{i}.txt:").content.put(f"file {i}".encode())
    from msgraph.generated.drives.item.items.item.children.children_request_builder import ChildrenRequestBuilder
    cfg = ChildrenRequestBuilder.ChildrenRequestBuilderGetRequestConfiguration(
        query_parameters=ChildrenRequestBuilder.ChildrenRequestBuilderGetQueryParameters(top=3)
    )
    page = await client.drives.by_drive_id(did).items.by_drive_item_id(folder.id).children.get(request_configuration=cfg)
    names = [c.name for c in page.value]
    pages = 1
    while page.odata_next_link:
        page = await client.drives.by_drive_id(did).items.by_drive_item_id(folder.id).children.with_url(page.odata_next_link).get()
        names += [c.name for c in page.value]
        pages += 1
    check(names == [f"f{i}.txt" for i in range(7)] and pages == 3, f"children paging ({pages} pages)")

    small = await client.drives.by_drive_id(did).items.by_drive_item_id("root:/sdk/small.txt:").content.put(b"hello sdk")
    check(small.size == 9 and small.file.hashes.quick_xor_hash, "simple upload + quickXorHash")
    check(small.parent_reference.drive_id == did and small.parent_reference.path.endswith("root:/sdk"), "parentReference")
    check(small.sharepoint_ids.list_item_unique_id is not None, "driveItem sharepointIds")

    # Resumable upload: the session is created through the SDK; fragments go to the
    # pre-authorised uploadUrl without an Authorization header. (msgraph_core's
    # LargeFileUploadTask is not used: in 1.x it sends fragments of max_chunk_size+1
    # bytes and one extra PUT after the session completed; the emulator rejects both.)
    data = bytes((i * 7) % 256 for i in range(327_680 * 6 + 1234))
    body = CreateUploadSessionPostRequestBody(item=DriveItemUploadableProperties(
        additional_data={"@microsoft.graph.conflictBehavior": "replace"}))
    session = await client.drives.by_drive_id(did).items.by_drive_item_id("root:/sdk/large.bin:").create_upload_session.post(body)
    check(session.upload_url and session.next_expected_ranges == ["0-"], "createUploadSession")
    frag, off, chunks = 327_680 * 2, 0, []
    while off < len(data):
        part = data[off:off + frag]
        r = requests.put(session.upload_url, data=part,
                         headers={"Content-Range": f"bytes {off}-{off + len(part) - 1}/{len(data)}"}, timeout=60)
        chunks.append(r.status_code)
        off += len(part)
    check(chunks[:-1] == [202] * (len(chunks) - 1) and chunks[-1] == 201, f"fragments {chunks}")
    item = await client.drives.by_drive_id(did).items.by_drive_item_id("root:/sdk/large.bin:").get()
    check(item.size == len(data), f"large upload ({len(chunks)} fragments, {item.size} bytes)")
    content = await client.drives.by_drive_id(did).items.by_drive_item_id(item.id).content.get()
    check(content == data, "download large file (302 → pre-authorised URL)")

    # PATCH: rename + timestamps; delta sees it.
    from msgraph.generated.models.file_system_info import FileSystemInfo
    import datetime
    ts = datetime.datetime(2019, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    patched = await client.drives.by_drive_id(did).items.by_drive_item_id(small.id).patch(
        DriveItem(name="renamed.txt", file_system_info=FileSystemInfo(last_modified_date_time=ts)))
    check(patched.name == "renamed.txt" and patched.file_system_info.last_modified_date_time == ts, "PATCH rename + fileSystemInfo")

    delta = await client.drives.by_drive_id(did).items.by_drive_item_id("root").delta.get()
    seen = [d.name for d in delta.value]
    while delta.odata_next_link:
        delta = await client.drives.by_drive_id(did).items.by_drive_item_id("root").delta.with_url(delta.odata_next_link).get()
        seen += [d.name for d in delta.value]
    check("renamed.txt" in seen and delta.odata_delta_link, f"delta ({len(seen)} items, deltaLink)")

    await client.drives.by_drive_id(did).items.by_drive_item_id(patched.id).delete()
    try:
        await client.drives.by_drive_id(did).items.by_drive_item_id(patched.id).get()
        check(False, "deleted item is gone")
    except Exception as e:  # ODataError
        err = getattr(e, "error", None)
        check(getattr(e, "response_status_code", None) == 404 and err is not None and err.code == "itemNotFound",
              "404 parsed as ODataError itemNotFound")
    print("ALL OK", flush=True)


asyncio.run(main())
