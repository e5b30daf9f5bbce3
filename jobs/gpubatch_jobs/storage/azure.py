"""The `az://CONTAINER/BLOB` driver: Azure Blob Storage, through pyarrow's AzureFileSystem.

Credentials, the Azure SDK's usual settings: `AZURE_STORAGE_CONNECTION_STRING`
(account, key or SAS, and endpoint in one), or `AZURE_STORAGE_ACCOUNT_NAME`
with `AZURE_STORAGE_ACCOUNT_KEY` or `AZURE_STORAGE_SAS_TOKEN`; with the name
alone, the SDK's DefaultAzureCredential (AKS Workload Identity, managed
identity, `AZURE_CLIENT_ID`/`AZURE_TENANT_ID`/`AZURE_CLIENT_SECRET`).
The connection string's `BlobEndpoint` points at another server (Azurite).

A blob is published through a hidden temporary blob in the same folder
(`.NAME.partial-…`), copied server-side to its final name when whole and then
deleted, because pyarrow's block-blob stream creates the blob (empty) when it
opens it and commits blocks on every flush (measured on Azurite).
"""

from __future__ import annotations

import os
from typing import Any

from gpubatch_jobs import contract
from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.storage.arrow import ArrowStore

CONNECTION_STRING_ENV = contract.AZURE_STORAGE_CONNECTION_STRING
ACCOUNT_NAME_ENV = contract.AZURE_STORAGE_ACCOUNT_NAME
ACCOUNT_KEY_ENV = contract.AZURE_STORAGE_ACCOUNT_KEY
SAS_TOKEN_ENV = contract.AZURE_STORAGE_SAS_TOKEN


def parse_connection_string(text: str) -> dict[str, str]:
    """`Key=value;...` (values may hold '='); keys as written."""
    pairs = {}
    for part in text.strip().strip(";").split(";"):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"{CONNECTION_STRING_ENV}: {part[:40]!r} is not Key=value; copy the whole connection "
                           "string from the storage account's Access keys page")
        pairs[key.strip()] = value.strip()
    return pairs


class AzureDriver(ArrowStore):
    scheme = "az"
    root_word = "container"
    form = "az://CONTAINER/BLOB"
    settings_env = (CONNECTION_STRING_ENV, ACCOUNT_NAME_ENV, ACCOUNT_KEY_ENV, SAS_TOKEN_ENV,
                    "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET")
    bad_credentials_marks = ("AuthenticationFailed", "InvalidAuthenticationInfo", "NoAuthenticationInformation",
                             "Server failed to authenticate the request")
    missing_root_marks = ("ContainerNotFound", "The specified container does not exist")
    denied_marks = ("AuthorizationFailure", "AuthorizationPermissionMismatch", "403 This request is not authorized")
    credentials_hint = f"{CONNECTION_STRING_ENV}, or {ACCOUNT_NAME_ENV} with {ACCOUNT_KEY_ENV} or {SAS_TOKEN_ENV}"
    endpoint_hint = f"the BlobEndpoint of {CONNECTION_STRING_ENV}"
    read_right = "Storage Blob Data Reader"
    write_right = "Storage Blob Data Contributor"
    publish_through_temp = True

    def endpoint(self) -> str:
        try:
            return self._options()["blob_endpoint"]
        except BadInput:
            return "Azure Blob Storage"

    def list_command(self, url: str) -> str:
        root, key = self.parse(url)
        return f"az storage blob list --container-name {root} --prefix '{key}'"

    def _options(self) -> dict[str, str]:
        """account, key or sas, blob_endpoint from the environment."""
        pairs = parse_connection_string(os.environ[CONNECTION_STRING_ENV]) \
            if os.environ.get(CONNECTION_STRING_ENV) else {}
        account = pairs.get("AccountName") or os.environ.get(ACCOUNT_NAME_ENV, "")
        if not account:
            raise BadInput(f"az:// needs a storage account: set {CONNECTION_STRING_ENV}, or {ACCOUNT_NAME_ENV} "
                           f"(with {ACCOUNT_KEY_ENV} or {SAS_TOKEN_ENV}, or workload identity); in a pod: the "
                           "Secret named by spec.storage.secretName")
        options = {"account": account}
        key = pairs.get("AccountKey") or (os.environ.get(ACCOUNT_KEY_ENV, "") if not pairs else "")
        sas = pairs.get("SharedAccessSignature") or (os.environ.get(SAS_TOKEN_ENV, "") if not pairs else "")
        if key:
            options["key"] = key
        elif sas:
            options["sas"] = sas.lstrip("?")
        protocol = pairs.get("DefaultEndpointsProtocol", "https")
        suffix = pairs.get("EndpointSuffix", "core.windows.net")
        options["blob_endpoint"] = pairs.get("BlobEndpoint") or f"{protocol}://{account}.blob.{suffix}"
        return options

    def make_filesystem(self) -> Any:
        from pyarrow import fs as pafs

        options = self._options()
        kwargs: dict[str, Any] = {"account_name": options["account"]}
        if "key" in options:
            kwargs["account_key"] = options["key"]
        elif "sas" in options:
            kwargs["sas_token"] = options["sas"]
        scheme, _, rest = options["blob_endpoint"].partition("://")
        host, _, path = rest.partition("/")
        if path.strip("/") == options["account"]:
            authority = host  # path-style (emulator): SCHEME://HOST/ACCOUNT
        elif host.startswith(options["account"] + "."):
            authority = host[len(options["account"]):]  # the usual ".blob.core.windows.net"
        else:
            raise BadInput(f"{CONNECTION_STRING_ENV}: BlobEndpoint {options['blob_endpoint']!r} names neither "
                           f"ACCOUNT.blob.HOST nor HOST/ACCOUNT for account {options['account']!r}; fix the "
                           "connection string")
        dfs_authority = authority.replace(".blob.", ".dfs.", 1) if authority.startswith(".") else authority
        kwargs.update(blob_storage_authority=authority, blob_storage_scheme=scheme,
                      dfs_storage_authority=dfs_authority, dfs_storage_scheme=scheme)
        return pafs.AzureFileSystem(**kwargs)
